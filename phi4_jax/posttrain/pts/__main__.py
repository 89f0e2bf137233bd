"""`python -m phi4_jax.posttrain.pts`: the resumable PTS runner (`phi4_jax.posttrain.pts.cli`)."""

from phi4_jax import cli
from phi4_jax.posttrain.pts.cli import PROG, main

if __name__ == "__main__":
    cli.run(main, prog=PROG)
