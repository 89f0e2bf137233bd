"""Synthetic data from organic seeds, offline end to end, into a pretraining run (issue 14).

    python -m phi4_jax.curate.e2e --workdir=/tmp/data_e2e

Every step is the command a user runs by hand (docs/synth.md, docs/curate.md, docs/data.md):
  pages       HTML pages: --pages DIR (*.html, *.htm) or, by default, pydoc's HTML pages of a
              few standard-library modules (--modules), written to WORKDIR/pages.jsonl
  extracted   workflows/extraction.py: HTML -> text, code and math kept (resiliparse)
  seeds       workflows/seed_curation.py: passages by structure, each scored 0-5 on the
              rubric by SmolLM2-135M-Instruct (served by `python -m phi4_jax.serve` on
              127.0.0.1; its reply is started with "Score:"), the best of each page kept
  rewritten   workflows/rewrite.py: each seed -> an exercise, a discussion, a reasoning task
  validated   workflows/validation.py: each fenced Python block of a text run in the sandbox
  clean       python -m phi4_jax.curate.decontaminate against HumanEval and CHAMP
  deduped     python -m phi4_jax.curate.dedup (MinHash LSH)
  store       python -m phi4_jax.data.prepare: a token store (Phi-4 tiktoken encoding)
  train       python -m launch.local --exp=tiny_pretrain on WORKDIR/mixture.py: the embedded
              mixture plus this store as source `e2e_synthetic` (--weight of the tokens), with its
              held-out loss evaluated during training
then WORKDIR/report.txt counts what each step kept and rejected, and why.

Quality from a 135M model does not matter; every step doing its job, being counted and being
resumable does: the workflow steps resume from their engine shards (a rerun of a finished job
asks the server nothing), a finished non-engine step is skipped while its command and its input
file are unchanged (WORKDIR/.done/STEP), and training resumes from its last checkpoint.
"""

from __future__ import annotations

import collections
import glob
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

from phi4_jax import cli

PROG = "python -m phi4_jax.curate.e2e"
MODULES = "bisect,heapq,colorsys"
SOURCE = "e2e_synthetic"  # the embedded mixture has a "synthetic" role already
SEQ_LEN = 128  # tiny_pretrain's data.seq_len
# The rubric's reply is started here: SmolLM2-135M explains at length and rarely ends with the
# "Score: N" line; prefilled, it answers the number in a token or two.
SCORE_PREFILL = "Score:"


def workflow(name: str) -> str:
    """The path of workflows/NAME.py (the repository's workflow configs, an installed package)."""
    spec = importlib.util.find_spec("workflows")
    if spec is None or not spec.submodule_search_locations:
        raise cli.UsageError("the repository's `workflows` package is not importable: install "
                             "phi4_jax from a checkout (pip install -e .)")
    return os.path.join(list(spec.submodule_search_locations)[0], f"{name}.py")


def pydoc_pages(modules: Sequence[str]) -> list[dict[str, Any]]:
    """pydoc's HTML page of each module: real HTML (tables, navigation, <pre>-less code and
    boilerplate such as 'Method resolution order') for the extraction and the rubric to sort."""
    import importlib
    import pydoc

    out = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise cli.UsageError(f"--modules: cannot import {name!r}: {e}") from None
        html = pydoc.html.page(pydoc.describe(module), pydoc.html.document(module, name))
        out.append({"id": f"pydoc/{name}", "source": "pydoc", "html": html})
    return out


def html_pages(folder: str) -> list[dict[str, Any]]:
    paths = sorted(p for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)
                   if p.lower().endswith((".html", ".htm")))
    if not paths:
        raise cli.UsageError(f"--pages {folder}: no *.html / *.htm files")
    out = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            out.append({"id": os.path.relpath(path, folder), "source": "pages",
                        "html": f.read()})
    return out


def write_jsonl(path: str, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.replace(tmp, path)


def count_lines(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def rejects(stage_dir: str) -> collections.Counter:
    """Reject reasons of one engine stage (its shards' rejects files)."""
    out: collections.Counter = collections.Counter()
    for path in sorted(glob.glob(os.path.join(stage_dir, "*.rejects.jsonl"))):
        with open(path, encoding="utf-8") as f:
            out.update(json.loads(line)["reason"] for line in f if line.strip())
    return out


def digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Job:
    """The steps of one work dir: a finished step is not run again while its command and the
    contents of its input file are the same (an upstream step that changed its output makes
    every step after it run again)."""

    def __init__(self, workdir: str, env: dict[str, str]):
        self.w, self.env = workdir, env
        os.makedirs(os.path.join(workdir, ".done"), exist_ok=True)

    def run(self, name: str, argv: list[str], *, source: str | None = None,
            output_dir: str | None = None, always: bool = False) -> None:
        """output_dir: removed first when this step finished before on other input (a command
        that resumes from what it finds there, like prepare, must not mix the two)."""
        marker = os.path.join(self.w, ".done", name)
        done = {"argv": argv, "input_sha256": digest(source) if source else None}
        if not always and os.path.exists(marker):
            with open(marker, encoding="utf-8") as f:
                if json.load(f) == done:
                    print(f"[e2e] {name}: done before (WORKDIR/.done/{name})", flush=True)
                    return
            os.remove(marker)
            if output_dir and os.path.isdir(output_dir):
                shutil.rmtree(output_dir)
        cli.run_step(name, argv, self.env)
        with open(marker + ".tmp", "w", encoding="utf-8") as f:
            json.dump(done, f)
        os.replace(marker + ".tmp", marker)

    def synth(self, name: str, config: str, arg: str) -> None:
        # always run: the engine itself resumes (and replays a finished job from its cache)
        self.run(name, [sys.executable, "-m", "phi4_jax.synth.run", f"{workflow(config)}:{arg}",
                        f"--output={self.w}/{name}", "--quiet"], always=True)


MIXTURE = '''"""The embedded mixture plus the synthetic store (by python -m phi4_jax.curate.e2e)."""

from phi4_jax.data.mixture import Source, Stage, load_mixture

STORE = {store!r}
WEIGHT = {weight!r}


def build_mixture(cache_dir):
    base = load_mixture("data_mixtures.embedded", cache_dir=cache_dir)
    (stage,) = base.stages
    weights = {{name: w * (1 - WEIGHT) for name, w in stage.weights.items()}}
    return base.replace(name="embedded_plus_{source}",
                        sources=(*base.sources, Source({source!r}, STORE)),
                        stages=(Stage({{**weights, {source!r}: WEIGHT}}),))
'''


def store_tokens(store: str) -> int:
    with open(os.path.join(store, "manifest.json"), encoding="utf-8") as f:
        return int(json.load(f)["num_tokens"])


def last_metrics(path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    out.update(json.loads(line))
    return out


def report(w: str, pages: int) -> str:
    lines = [f"{'step':<11} {'kept':>6}  rejected (reason: count)", f"{'pages':<11} {pages:>6}"]

    def engine(name: str, folder: str, stages: Sequence[str]) -> None:
        with open(os.path.join(w, folder, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        for stage in stages:
            reasons = rejects(os.path.join(w, folder, "stages", stage))
            shown = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items())) or "-"
            label = stage if len(stages) > 1 else name
            lines.append(f"{label:<11} {manifest['stages'][stage]['records']:>6}  {shown}")

    engine("extracted", "extracted", ["extracted"])
    engine("seeds", "seeds", ["passages", "scored", "seeds"])
    scores: collections.Counter = collections.Counter()
    for path in sorted(glob.glob(os.path.join(w, "seeds", "stages", "scored", "*.jsonl"))):
        if not path.endswith(".rejects.jsonl"):
            with open(path, encoding="utf-8") as f:
                for line in filter(str.strip, f):
                    scores.update(str(x["score"]) for x in json.loads(line)["passages"])
    lines.insert(len(lines) - 1, f"{'  passages':<11} {sum(scores.values()):>6}  by rubric "
                 f"score (None: unparseable): {dict(sorted(scores.items()))}")
    engine("rewritten", "rewritten", ["rewritten"])
    engine("validated", "validated", ["validated"])
    for name, before, after, why in (
            ("clean", "validated/validated.jsonl", "clean.jsonl", "contaminated"),
            ("deduped", "clean.jsonl", "deduped.jsonl", "near_duplicate")):
        kept = count_lines(os.path.join(w, after))
        dropped = count_lines(os.path.join(w, before)) - kept
        lines.append(f"{name:<11} {kept:>6}  {why}: {dropped}")
    lines.append(f"{'store':<11} {store_tokens(os.path.join(w, 'store')):>6}  tokens")
    metrics = last_metrics(os.path.join(w, "train", "metrics.jsonl"))
    shown = {k: round(v, 4) for k, v in metrics.items()
             if k in ("step", "loss", f"eval/loss/{SOURCE}") and isinstance(v, int | float)}
    lines.append(f"{'train':<11} {'':>6}  {shown}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    doc = __doc__.split("\n\n")
    parser = cli.parser(PROG, "\n\n".join(doc[:1] + doc[2:]), example=doc[1].strip())
    parser.add_argument("--workdir", required=True, help="where everything is written")
    parser.add_argument("--pages", default=None, help="a folder of HTML pages (default: pydoc "
                        "pages of --modules)")
    parser.add_argument("--modules", default=MODULES, help="standard-library modules whose "
                        "pydoc HTML pages are the seed pages")
    parser.add_argument("--threshold", type=float, default=2,
                        help="seed score to keep (SmolLM2-135M rates nearly everything 2)")
    parser.add_argument("--top_fraction", type=float, default=0.5,
                        help="at most this fraction of a page's passages kept")
    parser.add_argument("--max_tokens", type=int, default=96, help="per rewritten text")
    parser.add_argument("--weight", type=float, default=0.1,
                        help="fraction of the training tokens from the synthetic source")
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    parser.add_argument("--model", default=None, help="the served model (default: the offline "
                        "SmolLM2-135M-Instruct GGUF)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        raise cli.UsageError(f"--steps {args.steps}: must be >= 1")
    if not 0 < args.weight < 1:
        raise cli.UsageError(f"--weight {args.weight}: must be in (0, 1)")
    w, py = os.path.abspath(args.workdir), sys.executable
    os.makedirs(w, exist_ok=True)
    job = Job(w, {"JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"})
    start = time.perf_counter()

    pages = html_pages(args.pages) if args.pages else pydoc_pages(args.modules.split(","))
    write_jsonl(os.path.join(w, "pages.jsonl"), pages)
    job.synth("extracted", "extraction", f"inputs={w}/pages.jsonl")

    from phi4_jax.serve.local import serving

    if args.model is None:
        from phi4_jax.convert.gguf import smollm2_path
        model = smollm2_path()
    else:
        model = args.model
    with serving(model, log_path=os.path.join(w, "serve.log"), served_model_name="smollm2",
                 env=job.env) as url:
        served = f"base_url={url},model=smollm2,api_key_env=none,rpm=0,concurrency=16"
        job.synth("seeds", "seed_curation",
                  f"{served},inputs={w}/extracted/extracted.jsonl,qa=false,"
                  f"threshold={args.threshold},top_fraction={args.top_fraction},"
                  f"score_prefill={SCORE_PREFILL},score_max_tokens=3")
        job.synth("rewritten", "rewrite",
                  f"{served},inputs={w}/seeds/seeds.jsonl,revise=false,reject_truncated=false,"
                  f"max_tokens={args.max_tokens}")
    job.synth("validated", "validation", f"inputs={w}/rewritten/rewritten.jsonl,timeout_s=5")
    job.run("clean", [py, "-m", "phi4_jax.curate.decontaminate",
                      "--input", f"{w}/validated/validated.jsonl", "--output", f"{w}/clean.jsonl",
                      "--benchmark", "humaneval", "--benchmark", "champ"],
            source=f"{w}/validated/validated.jsonl")
    job.run("deduped", [py, "-m", "phi4_jax.curate.dedup", "--input", f"{w}/clean.jsonl",
                        "--output", f"{w}/deduped.jsonl"], source=f"{w}/clean.jsonl")
    if count_lines(f"{w}/deduped.jsonl") == 0:
        raise cli.UsageError(f"no synthetic record survived (see {w}/*/stages/*/*.rejects.jsonl)"
                             ": lower --threshold, or give more --modules / --pages")
    job.run("store", [py, "-m", "phi4_jax.data.prepare", "--source_name", SOURCE,
                      "--input", f"{w}/deduped.jsonl", "--output", f"{w}/store"],
            source=f"{w}/deduped.jsonl", output_dir=f"{w}/store")
    tokens = store_tokens(f"{w}/store")
    # held-out rows are carved from each source, at most a quarter of a store (data/heldout.py)
    rows = min(8, tokens // (4 * SEQ_LEN))
    if rows == 0:
        raise cli.UsageError(f"the synthetic store holds {tokens} tokens, too few for one "
                             f"held-out row of {SEQ_LEN}: raise --max_tokens or give more pages")
    with open(f"{w}/mixture.py", "w", encoding="utf-8") as f:
        f.write(MIXTURE.format(store=f"{w}/store", weight=args.weight, source=SOURCE))
    job.run("train", [py, "-m", "launch.local", "--exp=tiny_pretrain", f"--workdir={w}/train",
                      f"--exp.data.mixture={w}/mixture.py", f"--exp.train.steps={args.steps}",
                      f"--exp.optimizer.warmup_steps={max(1, args.steps // 5)}",
                      f"--exp.eval.every={args.steps}", f"--exp.eval.heldout_rows={rows}",
                      f"--exp.eval.batch_size={rows}",
                      f"--exp.train.checkpoint_every={args.steps}"], always=True)
    text = report(w, len(pages))
    with open(f"{w}/report.txt", "w", encoding="utf-8") as f:
        f.write(text)
    print(text + f"[e2e] done in {time.perf_counter() - start:.0f}s: {w}", flush=True)
    return 0


if __name__ == "__main__":
    cli.run(main, prog=PROG)
