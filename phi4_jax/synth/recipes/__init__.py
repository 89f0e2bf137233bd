"""The synthetic-data workflows of the Phi-4 recipe (section 2) as stage functions of the
workflow engine; their configs and prompt templates are in `workflows/` (docs/synth.md,
"Workflows").

    text      segmentation of pages into passages, score and answer parsing (pure)
    common    ask-and-parse with re-asks, math-verify in a worker, sandbox verdicts, options
    seeds     seed curation: segment, rubric-score, keep the best; Q&A extraction
    vote      majority-vote question filter
    rewrite   rewrite-and-augment into dataset types; self-revision against a rubric
    code      instruction reversal for code; validation (code in the sandbox, math answers)
"""
