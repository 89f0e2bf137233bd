"""`python -m phi4_jax.posttrain.pts_cli`, kept working: the PTS runner is
`phi4_jax.posttrain.pts.cli` (also `python -m phi4_jax.posttrain.pts`), same flags."""

from phi4_jax.posttrain.pts.cli import (
    RunSummary,
    arithmetic_questions,
    build_problems,
    false_pivot_report,
    load_questions,
    main,
    run,
)

__all__ = ["RunSummary", "arithmetic_questions", "build_problems", "false_pivot_report",
           "load_questions", "main", "run"]

if __name__ == "__main__":
    from phi4_jax import cli

    PROG = "python -m phi4_jax.posttrain.pts_cli"
    cli.run(lambda argv: main(argv, prog=PROG), prog=PROG)
