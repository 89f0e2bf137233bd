"""`python -m phi4_jax.posttrain.refusal`: refusal data (`phi4_jax.posttrain.refusal.cli`)."""

from phi4_jax import cli
from phi4_jax.posttrain.refusal.cli import PROG, main

if __name__ == "__main__":
    cli.run(main, prog=PROG)
