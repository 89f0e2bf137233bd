"""Evaluation harness: `python -m phi4_jax.eval --model=PATH --tasks=... --output=DIR`.

    metrics.py     metric functions (acc / acc_norm, pass@k, SimpleQA buckets, perplexity)
    requests.py    text -> (context, continuation) tokens as lm-eval builds them
    lm.py          the model: in process (`LocalLM`) or an OpenAI-compatible server (`RemoteLM`)
    tasks.py       --tasks names -> examples (local MC JSONL, BIG-bench, HumanEval, CHAMP, ...)
    runners.py     one runner per task kind; `summarize` (value and standard error per metric)
    code_task.py   HumanEval pass@k in the sandbox (phi4_jax.synth)
    (math: phi4_jax.synth.math_verify, math-verify in a worker subprocess with a timeout)
    graders.py     SimpleQA graders: rule-based (the refusal workflow's) and LLM
    evaluate.py    `evaluate`: runs tasks, writes results.json, samples/, TensorBoard

See docs/eval.md.
"""
