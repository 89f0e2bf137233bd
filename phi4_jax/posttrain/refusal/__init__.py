"""Hallucination-refusal data (Phi-4 report): answer when usually right, refuse otherwise.

  seeds     trivia seeds (`read_seeds`) and reply grading (`grade`: correct / refusal / wrong)
  teachers  how the texts are written: `TemplateTeacher` (offline), `OpenAITeacher`
  data      what it builds: accuracy estimates -> SFT examples and 5-token DPO pairs
  cli       `python -m phi4_jax.posttrain.refusal` -> workdirs/refusal/{pairs,sft}.jsonl
"""

from phi4_jax.posttrain.refusal.data import (
    RefusalConfig,
    RefusalStats,
    SeedEstimate,
    build_refusal_data,
    estimate_accuracy,
    estimate_accuracy_served,
)
from phi4_jax.posttrain.refusal.seeds import TriviaSeed, grade, normalize, read_seeds
from phi4_jax.posttrain.refusal.teachers import (
    OpenAITeacher,
    Teacher,
    TeacherError,
    TemplateTeacher,
)

__all__ = ["OpenAITeacher", "RefusalConfig", "RefusalStats", "SeedEstimate", "Teacher",
           "TeacherError", "TemplateTeacher", "TriviaSeed", "build_refusal_data",
           "estimate_accuracy", "estimate_accuracy_served", "grade", "normalize", "read_seeds"]
