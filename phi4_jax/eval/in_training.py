"""`eval.tasks` during training: the harness's tasks scored on the model being trained.

    from phi4_jax.train import evaluation
    evaluation.register_task_scorer(task_scorer)   # launch/local.py does this

`task_scorer(run, graphdef, model_config)` loads the tasks once (`tasks.load_task`) and returns
`score(params)`: the live parameters merged into a model (no copy, no checkpoint), wrapped as a
`LocalLM` with Phi-4's tokenizer (what the training data is tokenized with), and every task run
by `evaluate.run_task` exactly as `python -m phi4_jax.eval` runs it (same prompts, batching and
metrics; `eval.task_limit` examples, `eval.task_batch_size` rows per forward pass, no progress
bar). It returns `{"<task>/<metric>": value}`. Every host runs it (the forward passes are
collectives over the mesh); the loop writes only process 0's.
"""

from __future__ import annotations

from typing import Any

from phi4_jax.eval import runners
from phi4_jax.eval.evaluate import EvalConfig, run_task
from phi4_jax.eval.lm import LocalLM
from phi4_jax.eval.tasks import load_task


def task_scorer(run: Any, graphdef: Any, model_config: Any):
    """score(params) -> {"<task>/<metric>": float} for `run.eval.tasks` (see the module)."""
    from flax import nnx

    from phi4_jax.serve.loading import Served, phi4_codec

    spec = run.eval
    tasks = [load_task(t) for t in spec.tasks]
    codec = phi4_codec(model_config, f"training run {run.name!r}")
    config = EvalConfig(limit=spec.task_limit, progress=False)

    def score(params: Any) -> dict[str, float]:
        model = nnx.merge(graphdef, params)
        lm = LocalLM(Served(model, codec, run.name, "training", ""),
                     batch_size=spec.task_batch_size)
        out = {}
        for task in tasks:
            summary = runners.summarize(task.kind, run_task(lm, task, config))
            out.update({f"{task.name}/{metric}": float(figure["value"])
                        for metric, figure in summary["metrics"].items()})
        return out

    return score
