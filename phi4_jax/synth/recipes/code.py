"""Instruction reversal for code, and validation of code and math by execution / math-verify.

Instruction reversal (records {id, code, tests?, entry_point?}):

    tested       seed_tests        the seed's tests (`tests`), or tests the model writes
                                   (template "tests"); either must pass on the original code in
                                   the sandbox, else `original_fails_tests` / `generated_tests_fail`
    instruction  code_to_instruction  the original code -> an instruction (template "instruction")
    regenerated  instruction_to_code  the instruction -> new code (template "code")
    faithful     check_regenerated    the regenerated code run against the same tests in the
                                   sandbox: kept as {instruction, code} when it passes, else
                                   rejected `unfaithful_<reason>` (wrong_answer, time_limit, ...)

Validation (`validate`, records {kind: code, code, tests, entry_point?}, {kind: math,
solution | answer_text, answer} or {kind: text, text}; without `kind`, inferred from the
fields): code runs with its tests in the sandbox, rejected as `time_limit` apart from
`wrong_answer`, `runtime_error`, `syntax_error`, `memory_limit`; a math solution's final answer
is compared with the reference by math-verify (`wrong_answer`, `unverifiable` when it cannot
decide in time); each fenced Python block of a text runs on its own (a text without code passes
as `no_code`).

Sandbox runs block: they go through asyncio.to_thread (common.run_check).
"""

from __future__ import annotations

import ast
import re
from typing import Any

from phi4_jax.synth.recipes.common import (
    ask_parsed,
    math_equal,
    run_check,
    sampling,
    verdict_reason,
)
from phi4_jax.synth.recipes.text import extract_answer
from phi4_jax.synth.stage import Reject, StageContext

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)


def extract_code(text: str) -> str:
    """The last fenced code block of a reply, or the whole reply when it has none (as the PTS
    code oracle reads replies)."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


def entry_point(code: str) -> str | None:
    """The name of the first top-level function of `code` (None if none or it does not parse)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    return next((n.name for n in tree.body if isinstance(n, ast.FunctionDef)), None)


def _judge_entry_point(record: dict[str, Any]) -> str | None:
    """The entry point handed to the judge: only for HumanEval-style tests (`check(candidate)`);
    plain assert tests call the function themselves."""
    defines_check = re.search(r"^def check\(", record.get("tests") or "", re.M)
    return record.get("entry_point") if defines_check else None


def _limits(ctx: StageContext) -> dict[str, Any]:
    return {"timeout_s": float(ctx.params.get("timeout_s", 10)),
            "memory_mb": int(ctx.params.get("memory_mb", 512))}


def _python_code(text: str) -> str:
    code = extract_code(text)
    try:
        ast.parse(code)
    except SyntaxError as e:
        raise ValueError(f"the reply's code does not parse: {e.msg} (line {e.lineno})") from None
    if not code.strip():
        raise ValueError("no code in the reply")
    return code


async def seed_tests(record: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """params: timeout_s (10), memory_mb (512), test_attempts (2: generated test suites tried,
    each a new cache key), sampling. Tests with `check(candidate)` need entry_point."""
    code = record.get("code")
    if not isinstance(code, str) or not code.strip():
        raise Reject("missing_code", "a seed needs `code`")
    ep = record.get("entry_point") or entry_point(code)
    if ep is None:
        raise Reject("no_function", "the seed's code defines no top-level function")
    if record.get("tests"):
        result = await run_check(code, record["tests"],
                                 _judge_entry_point({**record, "entry_point": ep}),
                                 **_limits(ctx))
        if not result.passed:
            raise Reject("original_fails_tests", verdict_reason(result)[1])
        return {**record, "entry_point": ep, "tests_origin": "seed"}
    failures = []
    for attempt in range(int(ctx.params.get("test_attempts", 2))):
        tests, _ = await ask_parsed(ctx, ctx.render("tests", {**record, "entry_point": ep}),
                                    _python_code, retries=0, reason="unparseable_tests",
                                    attempt_base=attempt, **sampling(ctx))
        result = await run_check(code, tests, _judge_entry_point({"tests": tests,
                                                                   "entry_point": ep}),
                                 **_limits(ctx))
        if result.passed:
            return {**record, "entry_point": ep, "tests": tests, "tests_origin": "generated"}
        failures.append(verdict_reason(result)[1])
    raise Reject("generated_tests_fail", "; ".join(failures))


async def code_to_instruction(record: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    reply = (await ctx.chat(ctx.render("instruction", record), **sampling(ctx)))[0].text.strip()
    if not reply:
        raise Reject("empty_reply", "no instruction")
    return {**record, "instruction": reply}


async def instruction_to_code(record: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    code, _ = await ask_parsed(ctx, ctx.render("code", record), _python_code,
                               retries=int(ctx.params.get("parse_retries", 1)),
                               reason="unparseable_code", **sampling(ctx))
    return {**record, "regenerated_code": code}


async def check_regenerated(record: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """Kept only when the regenerated code passes the tests the original passes."""
    result = await run_check(record["regenerated_code"], record["tests"],
                             _judge_entry_point(record), **_limits(ctx))
    if not result.passed:
        raise Reject(*verdict_reason(result, prefix="unfaithful_"))
    return {"id": ctx.record_id, "instruction": record["instruction"],
            "code": record["regenerated_code"], "original_code": record["code"],
            "tests": record["tests"], "tests_origin": record["tests_origin"],
            "entry_point": record["entry_point"], "verdict": result.verdict}


def record_kind(record: dict[str, Any]) -> str | None:
    """A record's `kind`, or when it has none, what its fields make it: code (code + tests),
    math (solution + answer), text (text)."""
    if record.get("kind"):
        return record["kind"]
    if "code" in record and "tests" in record:
        return "code"
    if "answer" in record and ("solution" in record or "answer_text" in record):
        return "math"
    return "text" if "text" in record else None


async def _validate_text(record: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """Every fenced Python block of a text runs in the sandbox on its own (the first that
    fails rejects the record with its verdict and the block's number); a text without code has
    nothing to execute and passes as `no_code`."""
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise Reject("missing_field", "a text record needs `text`")
    blocks = [b for b in _FENCE.findall(text) if b.strip()]
    for i, block in enumerate(blocks):
        result = await run_check(block, "", None, **_limits(ctx))
        if not result.passed:
            reason, detail = verdict_reason(result)
            raise Reject(reason, f"code block {i + 1} of {len(blocks)}: {detail}")
    verdict = "passed" if blocks else "no_code"
    return {**record, "validation": {"verdict": verdict, "code_blocks": len(blocks)}}


async def validate(record: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """params: timeout_s (10), memory_mb (512), math_timeout_s (10)."""
    kind = record_kind(record)
    if kind == "code":
        if not record.get("code") or not record.get("tests"):
            raise Reject("missing_field", "a code record needs `code` and `tests`")
        result = await run_check(extract_code(record["code"]), record["tests"],
                                 _judge_entry_point(record), **_limits(ctx))
        if not result.passed:
            raise Reject(*verdict_reason(result))
        return {**record, "validation": {"verdict": "passed"}}
    if kind == "math":
        solution = record.get("solution", record.get("answer_text"))
        if not isinstance(solution, str) or not str(record.get("answer", "")).strip():
            raise Reject("missing_field", "a math record needs `solution` and `answer`")
        predicted = extract_answer(solution) or ""
        outcome = await math_equal(str(record["answer"]), predicted,
                                   timeout_s=float(ctx.params.get("math_timeout_s", 10)))
        if outcome == "not_equal":
            raise Reject("wrong_answer", f"{predicted!r} != {record['answer']!r}")
        if outcome != "equal":
            raise Reject("unverifiable", f"math-verify could not decide {predicted!r} against "
                         f"{record['answer']!r} in time")
        return {**record, "validation": {"verdict": "passed", "predicted": predicted}}
    if kind == "text":
        return await _validate_text(record, ctx)
    raise Reject("unknown_kind", f"kind {kind!r}: validation knows code, math and text")
