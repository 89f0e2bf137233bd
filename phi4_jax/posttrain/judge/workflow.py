"""The judge job as a workflow on the engine (`phi4_jax.synth`): replies -> judged -> pairs.

  source   the prompts JSONL, {"id", "prompt", "reference"?, "replies"?} per line
  replies  checks a prompt (rejects `missing_field`, `bad_field`), keeps its given replies and
           asks every reply model (`reply:NAME`) for `num_samples` more; a model that fails
           is noted in the record's `failed` (reason `reply_failed`) and, if transiently, the
           shard is redone by the next run (`ctx.retry_later`)
  judged   every candidate judged (`judgement.judge`, re-asked when invalid); fewer than two
           candidates reject the prompt (`too_few_replies`); a failed judgement is the
           candidate's `error` ({reason, detail}, JUDGE_REASONS), never the prompt's
  pairs    any-vs-any pairs (`pairs.build_pairs`) per `by` score, in Phi-4 ChatML ids, with
           the counts of ties and identical sides

`export` turns the finished stages into the job's files: pairs.jsonl, judgements.jsonl and the
report (bad input by reason). Everything it writes is a function of the shards, so a run killed
at any point and rerun writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

from phi4_jax import synth
from phi4_jax.io import BadInputReport
from phi4_jax.posttrain import remote
from phi4_jax.posttrain.judge.judgement import (
    JUDGE_SYSTEM,
    JudgeError,
    Judgement,
    judge,
)
from phi4_jax.posttrain.judge.pairs import Candidate, JudgeItem, PairStats, build_pairs
from phi4_jax.posttrain.records import parse_pair, write_records

PROMPT_REASONS = {
    "missing_field": "id or prompt absent or not a non-empty string",
    "bad_field": "reference or replies of the wrong type",
    "reply_failed": "a reply model did not answer (its replies are missing)",
    "too_few_replies": "fewer than two candidates: nothing to compare",
}


def messages_of(system: str, prompt: str) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]


def check_prompt(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The given replies of a prompt record as candidates; `Reject` when it is malformed."""
    if not all(isinstance(obj.get(k), str) and obj[k].strip() for k in ("id", "prompt")):
        raise synth.Reject("missing_field", "id and prompt must be non-empty strings")
    raw = obj.get("replies", [])
    if not isinstance(raw, list):
        raise synth.Reject("bad_field", "replies must be a list")
    out = []
    for k, r in enumerate(raw):
        text = r if isinstance(r, str) else r.get("text") if isinstance(r, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise synth.Reject("bad_field",
                               f"replies[{k}] must be a non-empty string or {{'text': str}}")
        out.append({"text": text, "finished": True,
                    "source": str(r.get("source", "given")) if isinstance(r, dict) else "given"})
    if obj.get("reference") is not None and not isinstance(obj["reference"], str):
        raise synth.Reject("bad_field", "reference must be a string")
    return out


async def replies(record: dict[str, Any], ctx: synth.StageContext) -> dict[str, Any]:
    p = ctx.params
    candidates = check_prompt(record)
    messages = messages_of(p["system"], record["prompt"])

    async def sample(model: str) -> tuple[list[synth.Sample], str | None]:
        try:
            return await ctx.chat(messages, model=f"reply:{model}", n=p["num_samples"],
                                  temperature=p["temperature"], max_tokens=p["max_tokens"]), None
        except synth.RequestError as e:
            if e.transient:
                ctx.retry_later()
            return [], str(e)

    failed = []
    for model, (samples, error) in zip(p["models"], await asyncio.gather(
            *[sample(m) for m in p["models"]])):
        candidates += [{"text": s.text, "finished": s.finish_reason == "stop", "source": model}
                       for s in samples]
        if error is not None:
            failed.append({"model": model, "error": error})
    return {"id": record["id"], "prompt": record["prompt"],
            "reference": record.get("reference"), "candidates": candidates, "failed": failed}


async def judged(record: dict[str, Any], ctx: synth.StageContext) -> dict[str, Any]:
    p, candidates = ctx.params, record["candidates"]
    if len(candidates) < 2:
        raise synth.Reject("too_few_replies", f"{len(candidates)} candidates")
    extra = {"response_format": {"type": "json_object"}} if p["json_mode"] else {}

    prefill = p["prefill"]
    if prefill:  # the judge's reply starts with this text (vLLM's continue_final_message)
        extra["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}

    async def ask(messages: list[dict[str, str]]) -> str:
        sent = [*messages, {"role": "assistant", "content": prefill}] if prefill else messages
        (sample,) = await ctx.chat(sent, model="judge", temperature=p["temperature"],
                                   max_tokens=p["max_tokens"], **extra)
        return prefill + sample.text

    async def one(c: dict[str, Any]) -> dict[str, Any]:
        try:
            j = await judge(ask, record["prompt"], c["text"], reference=record["reference"],
                            attempts=p["attempts"], system=ctx.templates["system"])
            return {**c, "judgement": j.to_json(), "error": None}
        except JudgeError as e:
            error = {"reason": e.reason, "detail": str(e)}
        except synth.RequestError as e:
            if e.transient:
                ctx.retry_later()
            error = {"reason": "judge_request_failed", "detail": str(e)}
        except Exception as e:  # noqa: BLE001 -- one candidate's failure, not the prompt's
            error = {"reason": "judge_failed", "detail": f"{type(e).__name__}: {e}"}
        return {**c, "judgement": None, "error": error}

    return {**record, "candidates": list(await asyncio.gather(*[one(c) for c in candidates]))}


async def pairs(record: dict[str, Any], ctx: synth.StageContext) -> dict[str, Any]:
    p = ctx.params
    text = remote.phi4_text(p["tokenizer_name"])
    item = JudgeItem(record["id"], record["prompt"],
                     tuple(text.render(messages_of(p["system"], record["prompt"]))),
                     tuple(Candidate(c["text"], text.reply_ids(c["text"], c["finished"]),
                                     c["source"]) for c in record["candidates"]),
                     record["reference"])
    judgements = [Judgement.from_json(c["judgement"]) if c["judgement"] else None
                  for c in record["candidates"]]
    out, stats = [], {}
    for by in p["by"]:
        st = PairStats()
        out += [pair.to_json() for pair in build_pairs(
            item, judgements, tokenizer=text.tokenizer_name, by=by, min_margin=p["min_margin"],
            judge_name=p["judge"], stats=st)]
        stats[by] = dataclasses.asdict(st)
    return {"id": record["id"], "candidates": len(item.candidates), "pairs": out,
            "stats": stats}


def by_scores(by: str) -> list[str]:
    return ["accuracy", "overall"] if by == "both" else [by]


def build_workflow(args: Any) -> synth.Workflow:
    """The judge workflow of a parsed command line (phi4_jax.posttrain.judge.cli)."""
    reply_models = [m.strip() for m in args.reply_models.split(",") if m.strip()]
    models = {"judge": remote.model_config(args.model, base_url=args.base_url,
                                           api_key_env=args.api_key_env, args=args)}
    for m in reply_models:
        models[f"reply:{m}"] = remote.model_config(
            m, base_url=args.reply_base_url or args.base_url,
            api_key_env=args.reply_api_key_env or args.api_key_env, args=args)
    return synth.Workflow(
        name="judge", inputs=[args.input], shard_size=args.shard_size, cache=args.cache,
        models=models, stages=[
            synth.Stage("replies", replies, params={
                "models": reply_models, "num_samples": args.num_samples,
                "temperature": args.reply_temperature, "max_tokens": args.reply_max_tokens,
                "system": args.system}),
            synth.Stage("judged", judged, model="judge", templates={"system": JUDGE_SYSTEM},
                        params={"attempts": args.attempts, "max_tokens": args.judge_max_tokens,
                                "json_mode": args.json_mode, "prefill": args.judge_prefill,
                                "temperature": args.judge_temperature}),
            synth.Stage("pairs", pairs, params={
                "by": by_scores(args.by), "min_margin": args.min_margin, "judge": args.model,
                "system": args.system, "tokenizer_name": args.tokenizer_name})])


def export(result: synth.RunResult, output: str, input_path: str, reasons: dict[str, str],
           by: list[str]) -> tuple[dict[str, Any], BadInputReport, int]:
    """pairs.jsonl and judgements.jsonl in `output`; returns (counts, report, pairs)."""
    report = BadInputReport(reasons)
    report.file(input_path)
    for r in remote.rejects(result, None):
        report.bad(input_path, "missing_field" if r["reason"] == "missing_id" else r["reason"],
                   r["where"], r["detail"])
    for r in remote.rejects(result, "replies"):
        report.bad(input_path, r["reason"], f"{input_path} id {r['id']}", r["detail"])
    for record in result.records("replies"):
        for f in record["failed"]:
            report.bad(input_path, "reply_failed", f"{record['id']} {f['model']}", f["error"])
    for r in remote.rejects(result, "judged"):
        report.bad(input_path, r["reason"], r["id"], r["detail"])
    judgements = []
    report.file("judge")
    for record in result.records("judged"):
        report.ok(input_path)
        for j, c in enumerate(record["candidates"]):
            if c["error"] is None:
                report.ok("judge")
            else:
                report.bad("judge", c["error"]["reason"], f"{record['id']} candidate {j}",
                           c["error"]["detail"])
        judgements.append({"id": record["id"], "prompt": record["prompt"], "candidates": [
            {k: c[k] for k in ("source", "text", "judgement")} for c in record["candidates"]]})
    for r in remote.rejects(result, "pairs"):
        report.bad(input_path, r["reason"], r["id"], r["detail"])
    done = list(result.records("pairs"))
    n = write_records(os.path.join(output, "pairs.jsonl"),
                      [parse_pair(p) for record in done for p in record["pairs"]])
    write_records(os.path.join(output, "judgements.jsonl"), judgements)
    counts: dict[str, Any] = {"prompts": len(done),
                              "candidates": sum(r["candidates"] for r in done), "pairs": n}
    for b in by:
        for k in ("pairs", "ties", "identical"):
            counts[f"{k}_{b}"] = sum(r["stats"][b][k] for r in done)
    return counts, report, n
