"""Data-workflow configs for `python -m phi4_jax.synth.run` (docs/synth.md); never imported by
phi4_jax."""
