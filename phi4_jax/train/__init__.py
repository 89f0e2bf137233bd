"""The training engine: one pure step per objective, one loop that owns the side effects.

Modules are imported explicitly (this package imports nothing on its own); start at
`loop.run(config, workdir)` (`config.RunConfig` is the typed form of an experiment) or see
docs/training.md. Objectives register by name in `objectives` (DPO: `phi4_jax.train.dpo`).
"""
