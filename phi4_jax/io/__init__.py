"""Files: atomic writes, JSONL line reading, and the one report of counted bad input.

Every package that writes a result file (token stores, record files, caches, kernels) or reads
records a user gave it (prepare, post-training readers, workflows, evaluation) uses these, so
that "a crash leaves the old file or the new one, never half of one" and "a bad record is
counted with its file and line, never fatal" each have one implementation.
"""

from phi4_jax.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from phi4_jax.io.bad_input import BadInputReport, FileReport
from phi4_jax.io.jsonl import read_lines, read_objects

__all__ = ["BadInputReport", "FileReport", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "read_lines", "read_objects"]
