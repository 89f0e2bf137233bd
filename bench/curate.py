"""Organic curation against its peers, one corpus, one run: docs/s per core.

    python bench/curate.py --mb 20            # needs the bench extra (datatrove)

Corpus: documents made from the embedded sources (phi4_jax/data/embedded.py: stdlib
docstrings and their template rewrites, generated arithmetic word problems, stdlib source
files, the reference manual topics) and the fixture pages' extracts, repeated with a counter
suffix until --mb, plus planted contamination (HumanEval prompts and CHAMP problems, upper-cased
and re-spaced). Rows:

- decontamination, 13-grams of HumanEval + CHAMP: ours (phi4_jax.curate.ngram_index, one 13-gram
  pass) against datatrove's NGramsDecontFilter (its index written with its own simplify_text,
  ngrams and hash function; TextNormConfig(norm_numbers=False) so both keep numbers); matched
  documents must be identical.
- near-dedup, 5-grams, 14 x 8: ours (signatures + buckets + union-find) against datatrove's
  MinhashDedupSignature + MinhashDedupBuckets + MinhashDedupCluster, on the corpus (docs/s) and
  on a planted set (clusters must be the same): 300 bases, a near copy with one word changed
  (Jaccard ~0.94, bucketed with probability > 0.999) and a far copy (a third changed).
- quality classifier: the head over SmolLM2-135M embeddings (128 tokens) against fastText,
  docs/s at inference, on scripted labels.

datatrove's English word tokenizer is spaCy, not installed here: both datatrove rows run with
a whitespace splitter (`str.split` after its simplify_text, which is what it tokenizes into),
which is faster than spaCy, so the ratios are conservative for us. Its n-gram filter hashes with
sha1 here: with the default xxhash config it passes a str to xxhash.xxh64_intdigest, which
raises "Strings must be encoded before hashing" (datatrove 0.10.1, xxhash 3.x). Single process.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import tempfile
import time

import numpy as np
from host import cpu_model  # bench/host.py: this folder is sys.path[0]

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))



def corpus(megabytes: float, items) -> list[tuple[str, str]]:
    import pydoc_data.topics

    from phi4_jax.curate.extract import html_to_text
    from phi4_jax.data import embedded
    from phi4_jax.data.arithmetic import word_problems

    sources = {}
    for path in embedded.stdlib_files():
        try:
            with open(path, encoding="utf-8") as f:
                sources[path] = f.read()
        except (OSError, UnicodeDecodeError):
            continue
    docs = embedded.docstrings(sources)
    texts = [f"{n}\n\n{d}" for n, d in docs] + [embedded.rewrite(n, d) for n, d in docs]
    texts += list(itertools.islice(word_problems(seed=1), 20000))
    texts += [t for t in sources.values() if 500 < len(t) < 60000]
    texts += list(pydoc_data.topics.topics.values())
    pages = os.path.join(os.path.dirname(__file__), "..", "tests", "curate", "pages")
    for p in sorted(os.listdir(pages)):
        if p.endswith(".html"):
            with open(os.path.join(pages, p), encoding="utf-8") as f:
                texts.append(html_to_text(f.read()))
    rng = random.Random(0)
    out, size, rep = [], 0, 0
    while size < megabytes * 1e6:
        for t in texts:
            t = t if rep == 0 else f"{t}\n(copy {rep})"
            out.append((f"doc{len(out):07d}", t))
            size += len(t)
            if size >= megabytes * 1e6:
                break
        rep += 1
    for item in items[::7]:  # planted contamination
        pos = rng.randrange(len(out))
        out[pos] = (out[pos][0], out[pos][1][:300] + "\n" + item.text.upper().replace(" ", "  "))
    return out




def datatrove_tokenizer():
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Split(WordTokenizer):
        def word_tokenize(self, text):
            return text.split()

        def sent_tokenize(self, text):
            return [text]

        def span_tokenize(self, text):
            return [(0, len(text))]

    return Split()


def bench_decont(docs, items):
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter
    from datatrove.utils.hashing import HashConfig, create_hash_func
    from datatrove.utils.text import TextNormConfig, ngrams, simplify_text

    from phi4_jax.curate.ngram_index import NGramIndex

    t0 = time.perf_counter()
    ours = NGramIndex(items, [(13, "all")])
    ours_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours_hit = {d for d, text in docs if ours.scan(text)}
    ours_s = time.perf_counter() - t0

    tok = datatrove_tokenizer()
    config = NGramsDecontConfig(n_grams=13, find_query_ngrams=True,
                                norm_config=TextNormConfig(norm_numbers=False),
                                hash_config=HashConfig(64, "sha1"))
    hash_fn = create_hash_func(config.hash_config)
    index = tempfile.mkdtemp(prefix="dt-index-")
    by_task: dict[str, set] = {}
    for item in items:
        words = tok.word_tokenize(simplify_text(item.text, config.norm_config))
        by_task.setdefault(item.benchmark, set()).update(
            hash_fn(" ".join(g)) for g in ngrams(words, 13))
    for task, hashes in by_task.items():
        np.array(sorted(hashes), dtype=np.uint64).tofile(os.path.join(index,
                                                                      f"{task}.index.hashes"))
    filt = NGramsDecontFilter(index, config=config, language=tok)
    filt.load_index_hashes()
    t0 = time.perf_counter()
    dt_hit = set()
    for d, text in docs:
        keep = filt.filter(Document(text=text, id=d))
        if keep is not True:
            dt_hit.add(d)
    dt_s = time.perf_counter() - t0
    return ours_s, dt_s, ours_hit, dt_hit, ours_build


def datatrove_minhash(docs, workdir):
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupSignature,
    )
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig

    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8,
                           norm_config=TextNormConfig(norm_numbers=False),
                           hash_config=HashConfig(64, "sha1"))
    tok = datatrove_tokenizer()
    sig = MinhashDedupSignature(f"{workdir}/sigs", config=config, language=tok)
    sig.run((Document(text=t, id=d) for d, t in docs), rank=0, world_size=1)
    buckets = MinhashDedupBuckets(f"{workdir}/sigs", f"{workdir}/buckets", config=config)
    for b in range(config.num_buckets):
        buckets.run(rank=b, world_size=config.num_buckets)
    cluster = MinhashDedupCluster(f"{workdir}/buckets", f"{workdir}/clusters", config=config,
                                  save_cluster_id=True)
    cluster.run()
    groups: dict[int, list[str]] = {}
    path = f"{workdir}/clusters/000000.clusters"
    if os.path.exists(path):
        pairs = np.fromfile(path, dtype="<u4").reshape(-1, 2)
        for doc, cid in pairs.tolist():
            groups.setdefault(cid, []).append(docs[doc][0])
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def bench_dedup(docs):
    from phi4_jax.curate.minhash import near_duplicates

    t0 = time.perf_counter()
    ours = near_duplicates(docs)
    ours_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        theirs = datatrove_minhash(docs, work)
        dt_s = time.perf_counter() - t0
    return ours_s, dt_s, {frozenset(g) for g in ours.groups().values()}, theirs


def bench_quality(n: int):
    from phi4_jax.convert.gguf import smollm2_path
    from phi4_jax.curate.classifier import Embedder
    from phi4_jax.curate.quality import compare
    from tests.curate.test_quality import _corpus

    texts, scores = _corpus(n)
    t0 = time.perf_counter()
    embedder = Embedder.from_gguf(smollm2_path(), max_tokens=128, batch_size=16)
    embedder.embed(texts[:16])  # compile
    load_s = time.perf_counter() - t0
    metrics, _ = compare(texts, scores, embedder.embed, holdout=0.25)
    return metrics, load_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mb", type=float, default=20.0)
    ap.add_argument("--dedup_mb", type=float, default=5.0, help="corpus slice for MinHash")
    ap.add_argument("--quality_docs", type=int, default=400)
    args = ap.parse_args()
    from phi4_jax.curate.benchmarks import load_benchmarks
    from tests.curate.test_dedup import planted

    load = os.getloadavg()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}")
    items = load_benchmarks(["humaneval", "champ"])
    docs = corpus(args.mb, items)
    mb = sum(len(t) for _, t in docs) / 1e6
    print(f"corpus: {len(docs)} documents, {mb:.1f} MB")
    rows = []
    ours_s, dt_s, ours_hit, dt_hit, build = bench_decont(docs, items)
    same = ours_hit == dt_hit
    rows.append(("decontamination 13-gram", len(docs) / ours_s, len(docs) / dt_s,
                 f"matched {len(ours_hit)} vs {len(dt_hit)} docs, identical: {same}"))
    sub, size = [], 0
    for d in docs:
        sub.append(d)
        size += len(d[1])
        if size > args.dedup_mb * 1e6:
            break
    ours_s, dt_s, ours_c, dt_c = bench_dedup(sub)
    rows.append((f"near-dedup MinHash ({len(sub)} docs)", len(sub) / ours_s, len(sub) / dt_s,
                 f"clusters {len(ours_c)} vs {len(dt_c)}, identical: {ours_c == dt_c}"))
    planted_docs = sorted(planted(300, seed=7, near_edits=1).items())  # J ~0.94 / <0.2
    _, _, ours_p, dt_p = bench_dedup(planted_docs)
    rows.append(("near-dedup planted set (900 docs)", float("nan"), float("nan"),
                 f"clusters {len(ours_p)} vs {len(dt_p)}, identical: {ours_p == dt_p}"))
    metrics, load_s = bench_quality(args.quality_docs)
    rows.append(("quality: SmolLM2 head vs fastText", metrics["head"]["docs_per_s"],
                 metrics["fasttext"]["docs_per_s"],
                 f"macro-F1 {metrics['head']['macro_f1']:.3f} vs "
                 f"{metrics['fasttext']['macro_f1']:.3f}, F1@3 "
                 f"{metrics['head']['f1_at_threshold']:.3f} vs "
                 f"{metrics['fasttext']['f1_at_threshold']:.3f} (load+compile {load_s:.0f}s)"))
    print(f"{'':<36}{'ours docs/s':>12}{'peer docs/s':>12}{'ratio':>8}  check")
    for name, a, b, note in rows:
        ratio = a / b if b == b and b else float("nan")
        print(f"{name:<36}{a:>12.0f}{b:>12.0f}{ratio:>8.2f}  {note}")
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; single process")


if __name__ == "__main__":
    main()
