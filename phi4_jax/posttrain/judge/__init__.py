"""Judge-guided preference pairs (Phi-4 report, DPO round 2).

  judgement  the rubric prompt, the parsed `Judgement` (faults, 1-5 scores), and `judge`:
             one judgement through any async ask, re-asked when invalid
  pairs      what it builds: `JudgeItem`s of candidate replies -> any-vs-any `Pair`s
  workflow   the job on the data-workflow engine: replies -> judged -> pairs, and its export
  cli        `python -m phi4_jax.posttrain.judge` -> workdirs/judge/pairs.jsonl

Pairs are `phi4_jax.posttrain.records` pairs in the policy's token ids (docs/posttrain.md).
"""

from phi4_jax.posttrain.judge.judgement import (
    FAULT_TYPES,
    JUDGE_REASONS,
    JUDGE_SYSTEM,
    SCORES,
    Fault,
    JudgeError,
    Judgement,
    JudgeParseError,
    judge,
    judge_messages,
    parse_judgement,
)
from phi4_jax.posttrain.judge.pairs import Candidate, JudgeItem, PairStats, build_pairs, make_item

__all__ = ["FAULT_TYPES", "JUDGE_REASONS", "JUDGE_SYSTEM", "SCORES", "Candidate", "Fault",
           "JudgeError", "JudgeItem", "JudgeParseError", "Judgement", "PairStats",
           "build_pairs", "judge", "judge_messages", "make_item", "parse_judgement"]
