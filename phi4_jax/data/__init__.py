"""The data engine: Phi-4 tokenizer, token stores, mixtures with exact per-source epochs, packing,
multi-host sharding and exact resume. See docs/data.md.

Modules (imported explicitly; this package imports nothing heavy on its own):
  tokenizer   phi4_encoding() and the special-token table
  chat        ChatML rendering with per-token loss masks
  sft         SFT conversations: schema, validation, the store builder (python -m
              phi4_jax.data.sft)
  record_fields  typed field checks shared by record schemas (RecordError names the field)
  readers     input formats (JSONL .gz/.zst, Parquet, text trees) with bad-input accounting
  arithmetic  generated word problems with worked solutions (embedded "synthetic" role)
  prepare     the Apache Beam job that writes token stores (python -m phi4_jax.data.prepare)
  store       token store reader/writer
  mixture     Source / Stage / Mixture declarations; load_mixture (files, modules, names
              registered by the caller's package)
  plan        epochs per source, the plan table (python -m phi4_jax.data.plan FILE)
  schedule    exact row apportionment between sources
  row_layout  per-source epoch permutations and row layouts (concat and best-fit)
  packing     gathers row layouts into the batch arrays
  pipeline    build_iterator(): the checkpointable per-host Grain iterator
  embedded    embedded_mixture(cache_dir, table, ...): a real offline corpus built from the
              Python install, in the roles and fractions of the caller's table
"""
