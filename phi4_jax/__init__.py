"""phi4-jax: the Phi-4 training recipe in JAX."""
