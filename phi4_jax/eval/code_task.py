"""HumanEval pass@k: n samples per problem, run against the problem's tests in the sandbox.

A sample is the model's continuation of the problem's prompt (cut at the Codex stop strings);
the program is prompt + continuation, checked with `phi4_jax.synth.check_many` (its judge calls
`check(entry_point)`). Per problem: c passed of n, pass@k by the unbiased estimator for each k
<= n, and how many samples hit the time limit: a timeout is a failure for pass@k and is also
counted apart (`timeout_rate`), since a slow machine and a wrong program are different news.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from phi4_jax.eval.metrics import pass_at_k

STOP = ("\nclass", "\ndef", "\n#", "\nif __name__", "\nprint(")


def run_humaneval(lm: Any, docs: Sequence[dict[str, Any]], *, n: int, ks: Sequence[int],
                  temperature: float, max_tokens: int, seed: int, timeout_s: float,
                  progress: Any = None) -> list[dict[str, Any]]:
    from phi4_jax.synth import CheckCase, SandboxConfig, check_many

    completions = lm.generate([d["prompt"] for d in docs], n=n, max_tokens=max_tokens,
                              temperature=temperature, seed=seed, stop=STOP)
    cases = [CheckCase(d["prompt"] + c, d["test"], d["entry_point"])
             for d, cs in zip(docs, completions) for c in cs]
    verdicts = check_many(cases, config=SandboxConfig(timeout_s=timeout_s))
    samples = []
    for i, (d, cs) in enumerate(zip(docs, completions)):
        mine = verdicts[i * n:(i + 1) * n]
        c = sum(v.passed for v in mine)
        timeouts = sum(v.verdict == "timeout" for v in mine)
        metrics = {f"pass@{k}": pass_at_k(n, c, k) for k in ks if k <= n}
        metrics["timeout_rate"] = timeouts / n
        samples.append({"id": d["id"], "prompt": d["prompt"], "output": cs,
                        "verdicts": [v.verdict for v in mine], "target": d["entry_point"],
                        "passed": c, "n": n, "metrics": metrics})
        if progress is not None:
            progress(1)
    return samples
