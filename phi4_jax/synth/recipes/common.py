"""What the workflow stages share: asking with a parser and re-asks, the math checker, the
sandbox verdicts, and the `PATH:ARG` options of the workflow config files.

    value, text = await ask_parsed(ctx, messages, parse_score, retries=2,
                                   reason="unparseable_score", temperature=0.0)
    outcome = await math_equal(gold, answer, timeout_s=10)     # "equal" | "not_equal" | "error"
    reason, detail = verdict_reason(check_result)              # "time_limit", "wrong_answer", ...
"""

from __future__ import annotations

import asyncio
import atexit
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from phi4_jax.synth.stage import Reject, StageContext

T = TypeVar("T")


async def ask_parsed(ctx: StageContext, messages: Sequence[Mapping[str, Any]],
                     parse: Callable[[str], T], *, retries: int, reason: str,
                     model: str | None = None, attempt_base: int = 0,
                     prefill: str | None = None, **sampling: Any) -> tuple[T, str]:
    """(parsed value, reply text) of one chat request; when `parse` raises ValueError the
    request is re-asked under a new cache key (`attempt`, from `attempt_base`), up to
    `retries` times, then the record is rejected with `reason` and every parse error.

    prefill: the reply is started with this text (an assistant message continued, vLLM's and
    phi4_jax.serve's `continue_final_message`), and the reply text is prefill + completion:
    how a small model is held to a format ("Score:")."""
    errors = []
    if prefill:
        messages = [*messages, {"role": "assistant", "content": prefill}]
        sampling = {**sampling, "extra_body": {"continue_final_message": True,
                                               "add_generation_prompt": False}}
    for attempt in range(attempt_base, attempt_base + retries + 1):
        reply = (prefill or "") + (await ctx.chat(messages, model=model, attempt=attempt,
                                                  **sampling))[0].text
        try:
            return parse(reply), reply
        except ValueError as e:
            errors.append(str(e))
    raise Reject(reason, "; ".join(errors))


def sampling(ctx: StageContext, name: str = "sampling") -> dict[str, Any]:
    return dict(ctx.params.get(name, {}))


# -- math-verify, in a worker process (phi4_jax.synth.math_verify: math-verify's signal.alarm
# timeouts work only in a main thread, and a pathological pair must not stall the stage) --

_VERIFIERS: dict[float, Any] = {}
_VERIFY_LOCK = threading.Lock()


def _math_equal_blocking(pairs: Sequence[tuple[str, str]], timeout_s: float) -> list[str]:
    from phi4_jax.synth.math_verify import MathVerifier

    with _VERIFY_LOCK:  # one worker per process and timeout; its pipe is not shared
        verifier = _VERIFIERS.get(timeout_s)
        if verifier is None:
            verifier = _VERIFIERS[timeout_s] = MathVerifier(timeout_s=timeout_s)
        return [verifier.check(gold, as_math(answer)) for gold, answer in pairs]


def as_math(text: str) -> str:
    """A bare answer ("1/2") wrapped in $...$ so math-verify reads it as math, as the gold
    answer is read; delimited text as is."""
    t = text.strip()
    return t if not t or "$" in t or "\\boxed" in t or "\\(" in t else f"${t}$"


async def math_equal_many(pairs: Sequence[tuple[str, str]], timeout_s: float = 10.0
                          ) -> list[str]:
    """math-verify outcomes ("equal", "not_equal", "error") of (gold, answer) pairs, off the
    event loop, each under `timeout_s` (a pair over it is "error" and the worker restarts)."""
    return await asyncio.to_thread(_math_equal_blocking, list(pairs), float(timeout_s))


async def math_equal(gold: str, answer: str, timeout_s: float = 10.0) -> str:
    return (await math_equal_many([(gold, answer)], timeout_s))[0]


@atexit.register
def _close_verifiers() -> None:
    for v in _VERIFIERS.values():
        v.close()


# -- sandbox verdicts --

VERDICT_REASONS = {  # phi4_jax.synth.code_check verdict -> reject reason
    "failed": "wrong_answer", "timeout": "time_limit", "memory": "memory_limit",
    "output_limit": "output_limit", "error": "runtime_error", "syntax_error": "syntax_error",
    "exited_early": "runtime_error", "killed": "runtime_error", "sandbox_error": "sandbox_error",
}


def verdict_reason(result: Any, prefix: str = "") -> tuple[str, str]:
    """(reject reason, detail) of a failed `CheckResult`: a time limit ("time_limit") is told
    apart from a wrong answer ("wrong_answer": a test's assertion failed) and from crashes
    ("runtime_error": the program, or the code under test, raised)."""
    reason = VERDICT_REASONS.get(result.verdict, "runtime_error")
    raised = re.match(r"(\w+) in the tests", result.reason or "")
    if result.verdict == "failed" and raised and raised.group(1) != "AssertionError":
        reason = "runtime_error"
    return prefix + reason, f"{result.verdict}: {result.reason}"[:500]


async def run_check(program: str, tests: str, entry_point: str | None, *,
                    timeout_s: float, memory_mb: int = 512) -> Any:
    """`code_check.check_program` in a thread (it blocks on the sandbox's subprocess)."""
    from phi4_jax.synth.code_check import check_program

    return await asyncio.to_thread(check_program, program, tests, entry_point,
                                   timeout_s=timeout_s, memory_mb=memory_mb)


# -- config options: PATH:ARG of `python -m phi4_jax.synth.run` --

def options(arg: str | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """`arg` of a workflow config: None, "local", or comma-separated key=value pairs over
    `defaults` (values parsed as int, float, true/false/none, else strings), e.g.
    "local,k=8" or "base_url=http://127.0.0.1:8000/v1,model=m,inputs=/data/q.jsonl"."""
    out = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            if key == "local":
                out.update(base_url="http://localhost:8000/v1", model="smollm2",
                           api_key_env=None, rpm=0)
                continue
            raise ValueError(f"config argument {item!r}: write key=value or 'local'")
        if key not in out:
            raise ValueError(f"config argument {key!r}: known keys are {sorted(out)}")
        out[key] = _value(value)
    return out


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("none", "null", ""):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


MODEL_DEFAULTS = {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini",
                  "api_key_env": "OPENAI_API_KEY", "rpm": 3000, "concurrency": 16,
                  "revision": "auto", "max_retries": 6}


def teacher(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The `models` entry of a config from its options (MODEL_DEFAULTS' keys)."""
    return {k: opts[k] for k in MODEL_DEFAULTS}
