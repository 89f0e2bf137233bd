"""How the judge is reached, and the retrying calls that turn its replies into judgements.

A backend is any OpenAI-compatible server (`OpenAIBackend`, over `phi4_jax.posttrain.remote`,
whose client retries 408/409/429/5xx and connection errors itself) or this project's model
in-process (`ModelBackend`, over a `Sampler`). `judge` re-asks on an invalid reply, telling the
judge what was wrong, and raises `JudgeError` listing every attempt; `judge_all` runs many in a
thread pool with a progress bar and counts the failures in a `BadInputReport` instead (reasons
JUDGE_REASONS, the first location of each `item id candidate j: errors`): one bad reply --
oversized, NaN scores, no JSON -- costs its candidate only, never the good judgements.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from phi4_jax.io.bad_input import BadInputReport
from phi4_jax.posttrain.judge.judgement import (
    Judgement,
    JudgeParseError,
    judge_messages,
    parse_judgement,
)
from phi4_jax.posttrain.remote import ChatModel, ServerError
from phi4_jax.posttrain.sampler import Sampler

if TYPE_CHECKING:
    from phi4_jax.posttrain.judge.pairs import JudgeItem


class JudgeBackend(Protocol):
    name: str

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The judge's reply text; raises `JudgeTransportError` when it cannot be reached."""
        ...


class JudgeTransportError(RuntimeError):
    """The backend failed to answer (after its own transport-level retries)."""


class JudgeError(RuntimeError):
    """No valid judgement after all attempts; `errors` has one entry per attempt."""

    def __init__(self, errors: list[str], reasons: list[str] | None = None):
        super().__init__(f"no valid judgement after {len(errors)} attempts: "
                         + " | ".join(f"attempt {i + 1}: {e}" for i, e in enumerate(errors)))
        self.errors = errors
        self.reasons = reasons if reasons is not None else ["invalid"] * len(errors)

    @property
    def reason(self) -> str:
        """'oversized' when every attempt's reply was too long to scan, else
        'no_valid_judgement' (the JUDGE_REASONS it is counted under)."""
        if self.reasons and all(r == "oversized" for r in self.reasons):
            return "oversized"
        return "no_valid_judgement"


class OpenAIBackend:
    """Any OpenAI-compatible chat server. `max_retries` / `timeout` go to `openai.OpenAI`;
    `client` (an `openai.OpenAI`) replaces base_url / api_key / max_retries / timeout."""

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 client: Any = None, temperature: float = 0.0, max_tokens: int = 1024,
                 max_retries: int = 3, timeout: float = 120.0, json_mode: bool = False):
        if client is None:
            import openai

            client = openai.OpenAI(base_url=base_url, api_key=api_key or "unused",
                                   max_retries=max_retries, timeout=timeout)
        self.model, self.name = ChatModel(client, model, max_tokens=max_tokens), model
        self.kwargs: dict[str, Any] = {"temperature": temperature}
        if json_mode:
            self.kwargs["response_format"] = {"type": "json_object"}

    def complete(self, messages: list[dict[str, str]]) -> str:
        try:
            replies = self.model.complete(messages, **self.kwargs)
        except ServerError as e:
            raise JudgeTransportError(str(e)) from e
        return replies[0].text if replies else ""


class ModelBackend:
    """This project's model as the judge, in-process: one rollout of a (greedy) `Sampler`."""

    def __init__(self, sampler: Sampler, name: str = "local"):
        self.sampler, self.name = sampler, name

    def complete(self, messages: list[dict[str, str]]) -> str:
        (rollout,) = self.sampler.sample([self.sampler.render(messages)], 1)[0]
        return self.sampler.decode(rollout.tokens)


def judge(backend: JudgeBackend, prompt: str, reply: str, *, reference: str | None = None,
          attempts: int = 3) -> Judgement:
    """One judgement; an invalid reply is answered with the error and asked again."""
    messages = judge_messages(prompt, reply, reference)
    errors: list[str] = []
    reasons: list[str] = []
    for _ in range(attempts):
        try:
            text = backend.complete(messages)
        except JudgeTransportError as e:
            errors.append(str(e))
            reasons.append("transport")
            continue
        try:
            return parse_judgement(text)
        except JudgeParseError as e:
            errors.append(str(e))
            reasons.append(e.reason)
            shown = text if e.reason != "oversized" else text[:2000] + " [...]"
            messages = messages + [
                {"role": "assistant", "content": shown},
                {"role": "user", "content": f"That reply was not valid ({e}). Reply again "
                                            "with only the JSON object described."}]
    raise JudgeError(errors, reasons)


JUDGE_REASONS = {
    "no_valid_judgement": "the judge gave no valid judgement in all attempts",
    "oversized": "every judge reply was longer than the scanned maximum (MAX_REPLY_CHARS)",
    "judge_failed": "judging raised an unexpected error (its type and message are shown)",
}


def judge_all(backend: JudgeBackend, items: Sequence[JudgeItem], *, attempts: int = 3,
              max_workers: int = 4, progress: bool = True, source: str = "judge",
              report: BadInputReport | None = None
              ) -> tuple[list[list[Judgement | None]], BadInputReport]:
    """Judges every candidate of every item (thread pool). A judged candidate is counted ok
    under `source` in the report, a failed one (its judgement None) under its JUDGE_REASONS
    reason: 'no_valid_judgement', 'oversized', or 'judge_failed' for an unexpected error."""
    from tqdm.auto import tqdm

    jobs = [(i, j) for i, item in enumerate(items) for j in range(len(item.candidates))]
    out: list[list[Judgement | None]] = [[None] * len(item.candidates) for item in items]
    report = report if report is not None else BadInputReport()
    report.file(source)

    def one(job: tuple[int, int]) -> Judgement:
        item = items[job[0]]
        return judge(backend, item.prompt, item.candidates[job[1]].text,
                     reference=item.reference, attempts=attempts)

    with ThreadPoolExecutor(max_workers=max_workers) as pool, tqdm(
            total=len(jobs), unit="reply", desc="judge", disable=not progress) as bar:
        for (i, j), fut in [(job, pool.submit(one, job)) for job in jobs]:
            where = f"{items[i].id} candidate {j}"
            try:
                out[i][j] = fut.result()
                report.ok(source)
            except JudgeError as e:
                report.bad(source, e.reason, where, str(e))
            except Exception as e:  # noqa: BLE001 -- one candidate's failure, not the run's
                report.bad(source, "judge_failed", where, f"{type(e).__name__}: {e}")
            bar.update()
    return out, report
