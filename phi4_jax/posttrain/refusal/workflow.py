"""The refusal job as a workflow on the engine (`phi4_jax.synth`): estimates -> texts -> data.

  source     the trivia seeds JSONL, {"id", "question", "answer", "aliases"?} per line
  estimates  checks a seed (rejects `missing_field`, `bad_aliases`), asks the policy
             (`policy`) for `num_samples` replies and grades them: the accuracy estimate
  texts      the teacher's answer, refusal, bogus question and its refusal: the offline
             `TemplateTeacher`, or `TEACHER_PROMPTS` asked of the `teacher` model (an empty
             reply re-asked up to `attempts` times, then the seed is rejected `teacher_failed`)
  data       the seed's SFT examples and truncated DPO pairs (`data.seed_data`), Phi-4 ids

`export` writes the job's files from the finished stages: pairs.jsonl, sft.jsonl,
estimates.jsonl and the report; a request that failed after every retry rejects its seed
(`policy_failed` / `teacher_failed` in the report) and is asked again by the next run.
"""

from __future__ import annotations

import collections
import os
from typing import Any

from phi4_jax import synth
from phi4_jax.io import BadInputReport
from phi4_jax.posttrain import remote
from phi4_jax.posttrain.records import parse_pair, parse_sft, write_records
from phi4_jax.posttrain.refusal.data import RefusalConfig, SeedEstimate, seed_data
from phi4_jax.posttrain.refusal.seeds import SeedError, TriviaSeed, check_seed, grade
from phi4_jax.posttrain.refusal.teachers import TEACHER_PROMPTS, TemplateTeacher


def seed_of(record: dict[str, Any]) -> TriviaSeed:
    return TriviaSeed(record["id"], record["question"], record["answer"],
                      tuple(record["aliases"]))


async def estimates(record: dict[str, Any], ctx: synth.StageContext) -> dict[str, Any]:
    p = ctx.params
    try:
        seed = check_seed(record)
    except SeedError as e:
        raise synth.Reject(e.reason, e.detail) from None
    samples = await ctx.chat([{"role": "user", "content": seed.question}], model="policy",
                             n=p["num_samples"], temperature=p["temperature"],
                             max_tokens=p["max_tokens"])
    replies = [{"text": s.text, "finished": s.finish_reason == "stop",
                "grade": grade(s.text, seed)} for s in samples]
    return {"id": seed.id, "question": seed.question, "answer": seed.answer,
            "aliases": list(seed.aliases), "replies": replies,
            "accuracy": sum(r["grade"] == "correct" for r in replies) / len(replies)}


async def teacher_text(ctx: synth.StageContext, kind: str, fields: dict[str, str]) -> str:
    messages = ctx.render(kind, fields)
    errors = []
    for attempt in range(ctx.params["attempts"]):
        (sample,) = await ctx.chat(messages, model="teacher", attempt=attempt,
                                   temperature=ctx.params["temperature"], max_tokens=200)
        if sample.text.strip():
            return sample.text.strip()
        errors.append("empty reply")
    raise synth.Reject("teacher_failed", f"teacher {kind!r} failed: {'; '.join(errors)}")


async def texts(record: dict[str, Any], ctx: synth.StageContext) -> dict[str, Any]:
    seed = seed_of(record)
    if ctx.params["teacher"] == "template":
        t = TemplateTeacher()
        bogus = t.bogus(seed)
        out = {"answer": t.answer(seed), "refusal": t.refusal(seed), "bogus": bogus,
               "bogus_refusal": t.bogus_refusal(seed, bogus)}
    else:
        fields = {"question": seed.question, "answer": seed.answer}
        out = {k: await teacher_text(ctx, k, fields) for k in ("answer", "refusal", "bogus")}
        out["bogus_refusal"] = await teacher_text(ctx, "bogus_refusal",
                                                  {"question": out["bogus"]})
    return {**record, "texts": out}


async def data(record: dict[str, Any], ctx: synth.StageContext) -> dict[str, Any]:
    p = ctx.params
    text = remote.phi4_text(p["tokenizer_name"])
    seed = seed_of(record)
    est = SeedEstimate(seed, tuple(text.render([{"role": "user", "content": seed.question}])),
                       [(text.reply_ids(r["text"], r["finished"]), r["text"], r["grade"])
                        for r in record["replies"]])
    config = RefusalConfig(samples=len(record["replies"]), usually=p["usually"],
                           truncate=p["truncate"])
    sft, pairs, counts = seed_data(est, record["texts"], text, config, p["teacher"])
    return {"id": seed.id, "sft": [e.to_json() for e in sft],
            "pairs": [x.to_json() for x in pairs], "counts": dict(counts)}


def build_workflow(args: Any) -> synth.Workflow:
    """The refusal workflow of a parsed command line (phi4_jax.posttrain.refusal.cli)."""
    models = {"policy": remote.model_config(args.model, base_url=args.base_url,
                                            api_key_env=args.api_key_env, args=args)}
    if args.teacher_model:
        models["teacher"] = remote.model_config(
            args.teacher_model, base_url=args.teacher_base_url or args.base_url,
            api_key_env=args.teacher_api_key_env or args.api_key_env, args=args)
    teacher = args.teacher_model or "template"
    return synth.Workflow(
        name="refusal", inputs=[args.input], shard_size=args.shard_size, cache=args.cache,
        models=models, stages=[
            synth.Stage("estimates", estimates, params={
                "num_samples": args.num_samples, "temperature": args.temperature,
                "max_tokens": args.max_tokens}),
            synth.Stage("texts", texts, templates=TEACHER_PROMPTS if args.teacher_model else {},
                        params={"teacher": teacher, "attempts": args.teacher_attempts,
                                "temperature": args.teacher_temperature}),
            synth.Stage("data", data, params={
                "teacher": teacher, "usually": args.usually, "truncate": args.truncate,
                "tokenizer_name": args.tokenizer_name})])


def export(result: synth.RunResult, args: Any, reasons: dict[str, str]
           ) -> tuple[dict[str, Any], BadInputReport, int, int]:
    """pairs.jsonl, sft.jsonl and estimates.jsonl in --output; returns (counts, report,
    pairs, sft examples)."""
    report = BadInputReport(reasons)
    seeds, policy = args.input, f"policy {args.model}"
    teacher = f"teacher {args.teacher_model or 'template'}"
    report.file(seeds)
    for r in remote.rejects(result, None):
        report.bad(seeds, "missing_field" if r["reason"] == "missing_id" else r["reason"],
                   r["where"], r["detail"])
    report.file(policy)
    for r in remote.rejects(result, "estimates"):
        if r["reason"].startswith("request_"):
            report.ok(seeds)
            report.bad(policy, "policy_failed", f"seed {r['id']}", r["detail"])
        else:
            report.bad(seeds, r["reason"], f"{seeds} id {r['id']}", r["detail"])
    estimated = list(result.records("estimates"))
    report.ok(seeds, len(estimated))
    report.ok(policy, len(estimated))
    report.file(teacher)
    for r in remote.rejects(result, "texts"):
        report.bad(teacher, "teacher_failed" if r["reason"].startswith("request_")
                   else r["reason"], f"seed {r['id']}", r["detail"])
    for r in remote.rejects(result, "data"):
        report.bad(teacher, r["reason"], f"seed {r['id']}", r["detail"])
    done = list(result.records("data"))
    report.ok(teacher, len(done))
    pairs = write_records(os.path.join(args.output, "pairs.jsonl"),
                          [parse_pair(p) for r in done for p in r["pairs"]])
    sft = write_records(os.path.join(args.output, "sft.jsonl"),
                        [parse_sft(e) for r in done for e in r["sft"]])
    write_records(os.path.join(args.output, "estimates.jsonl"), [
        {"id": e["id"], "question": e["question"], "accuracy": e["accuracy"],
         "replies": [{"text": r["text"], "grade": r["grade"]} for r in e["replies"]]}
        for e in estimated])
    kinds = collections.Counter()
    for r in done:
        kinds.update(r["counts"])
    counts = {"seeds": report.files[seeds].records_ok, "estimated": len(estimated),
              "sft": sft, "pairs": pairs} | dict(sorted(kinds.items()))
    return counts, report, pairs, sft
