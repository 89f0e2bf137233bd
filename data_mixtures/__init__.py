"""Mixture files: each module declares `MIXTURE` (see phi4_jax.data.mixture)."""
