"""seqio interop (the optional `[seqio]` extra; seqio pulls TensorFlow). See docs/data.md, "seqio".

    from phi4_jax import seqio as p4
    p4.register_mixture("embedded", cache_dir=...)   # -> seqio Mixture "phi4.embedded"
    p4.register_eval_task("mc:questions.jsonl")      # -> seqio Task "phi4_eval.questions"
    Source = p4.seqio_source("some_task", cache_dir)  # a registered seqio Task as our source

  mixtures  each mixture source's token store as a seqio Task ({"targets": int32 ids}) and the
            mixture as a seqio Mixture whose rates give the configured token (or example)
            fractions
  evals     evaluation tasks (mc / bigbench, ppl, simpleqa) as seqio Tasks whose metric_fns
            call phi4_jax.eval.metrics
  sources   the reverse: a registered seqio Task materialized into a token store, declared
            like any other `Source` in a mixture file

Nothing else in phi4_jax imports this package, and importing it imports neither seqio nor
TensorFlow: each function imports them when called (an ImportError names the extra).
"""

from phi4_jax.seqio.evals import register_eval_task
from phi4_jax.seqio.mixtures import mixture_rates, register_mixture, register_store_task
from phi4_jax.seqio.sources import iter_task_documents, seqio_source

__all__ = ["iter_task_documents", "mixture_rates", "register_eval_task", "register_mixture",
           "register_store_task", "seqio_source"]
