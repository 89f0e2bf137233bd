"""`python -m tests.posttrain.pts.coin_run OUT`: PTS over 8 coin problems (shards of 2
questions, batches of 2) in a process of its own, for the kill -9 tests; prints the run's
summary as JSON."""

from __future__ import annotations

import dataclasses
import json
import sys

from phi4_jax.posttrain.pts.cli import run
from phi4_jax.posttrain.pts.search import PTSConfig
from tests.posttrain.synthetic import CoinSampler, MarkerOracle, coin_problems

CONFIG = PTSConfig(n_samples=32, p_gap=0.3)
QUESTIONS, SHARD_SIZE, BATCH = 8, 2, 2


def main(out: str) -> dict:
    sampler, oracle = CoinSampler(), MarkerOracle()
    summary = run(coin_problems(QUESTIONS), sampler, oracle, CONFIG, out,
                  batch_questions=BATCH, shard_size=SHARD_SIZE, progress=False)
    return {**dataclasses.asdict(summary), "sampled_prefixes": len(sampler.sampled_prefixes),
            "oracle_checks": oracle.calls}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
