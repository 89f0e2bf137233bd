"""Judge-guided preference pairs (Phi-4 report, DPO round 2).

  judgement  the rubric prompt and the parsed `Judgement` (faults, 1-5 scores)
  backends   how the judge is reached: `OpenAIBackend`, `ModelBackend`; `judge`, `judge_all`
  pairs      what it builds: `JudgeItem`s of candidate replies -> any-vs-any `Pair`s
  cli        `python -m phi4_jax.posttrain.judge` -> workdirs/judge/pairs.jsonl

Pairs are `phi4_jax.posttrain.records` pairs in the policy's token ids (docs/posttrain.md).
"""

from phi4_jax.posttrain.judge.backends import (
    JudgeBackend,
    JudgeError,
    JudgeTransportError,
    ModelBackend,
    OpenAIBackend,
    judge,
    judge_all,
)
from phi4_jax.posttrain.judge.judgement import (
    FAULT_TYPES,
    JUDGE_SYSTEM,
    SCORES,
    Fault,
    Judgement,
    JudgeParseError,
    judge_messages,
    parse_judgement,
)
from phi4_jax.posttrain.judge.pairs import Candidate, JudgeItem, PairStats, build_pairs, make_item

__all__ = ["FAULT_TYPES", "JUDGE_SYSTEM", "SCORES", "Candidate", "Fault", "JudgeBackend",
           "JudgeError", "JudgeItem", "JudgeParseError", "JudgeTransportError", "Judgement",
           "ModelBackend", "OpenAIBackend", "PairStats", "build_pairs", "judge", "judge_all",
           "judge_messages", "make_item", "parse_judgement"]
