"""`python -m phi4_jax.posttrain.judge`: judge-guided pairs (`phi4_jax.posttrain.judge.cli`)."""

from phi4_jax import cli
from phi4_jax.posttrain.judge.cli import PROG, main

if __name__ == "__main__":
    cli.run(main, prog=PROG)
