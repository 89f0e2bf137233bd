"""The training engine: one pure step per objective, one loop that owns the side effects.

Modules are imported explicitly (this package imports nothing on its own); start at
`loop.run(config, workdir)` or see docs/training.md.
"""
