"""Direct preference optimization, all of it: the registered `dpo` objective and its config
section (`objective.py`), losses and sequence log-probs (`losses.py`), preference pairs packed
into batches (`batches.py`, CLI `python -m phi4_jax.train.dpo.batches plan ...`) and the cached
reference log-probs (`reference.py`). See docs/posttrain_training.md.

Like `phi4_jax.train`, this package imports nothing on its own; `phi4_jax.train.objectives`
imports `objective.py` (which registers `dpo`) when the registry is first read.
"""
