"""Organic-data curation (docs/curate.md): decontamination against benchmarks, MinHash
near-dedup, the educational-quality classifier, HTML extraction that keeps code and math.

Commands: python -m phi4_jax.curate.decontaminate | dedup | quality (annotate, train, score).
Stage functions for the workflow engine: decontaminate.decontaminate_stage,
edu.annotate_stage, extract.extract_stage. Modules are imported on use (Beam, JAX, fastText
are heavy)."""
