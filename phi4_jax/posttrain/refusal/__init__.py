"""Hallucination-refusal data (Phi-4 report): answer when usually right, refuse otherwise.

  seeds     trivia seeds (`read_seeds`) and reply grading (`grade`: correct / refusal / wrong)
  teachers  how the texts are written: `TemplateTeacher` (offline), `TEACHER_PROMPTS` (served)
  data      what it builds: accuracy estimates -> SFT examples and 5-token DPO pairs
  workflow  the job on the data-workflow engine: estimates -> texts -> data, and its export
  cli       `python -m phi4_jax.posttrain.refusal` -> workdirs/refusal/{pairs,sft}.jsonl
"""

from phi4_jax.posttrain.refusal.data import (
    RefusalConfig,
    RefusalStats,
    SeedEstimate,
    build_refusal_data,
    estimate_accuracy,
    seed_data,
)
from phi4_jax.posttrain.refusal.seeds import (
    TriviaSeed,
    check_seed,
    grade,
    normalize,
    read_seeds,
)
from phi4_jax.posttrain.refusal.teachers import (
    TEACHER_PROMPTS,
    Teacher,
    TeacherError,
    TemplateTeacher,
)

__all__ = ["TEACHER_PROMPTS", "RefusalConfig", "RefusalStats", "SeedEstimate", "Teacher",
           "TeacherError", "TemplateTeacher", "TriviaSeed", "build_refusal_data",
           "check_seed", "estimate_accuracy", "grade", "normalize", "read_seeds", "seed_data"]
