"""The scheduler thread: owns the model, batches requests into waves, streams their rows.

    scheduler = Scheduler(model, codec, max_batch=32, max_queue=64)
    scheduler.submit(job)     # from the event loop; APIError 429 when the queue is full
    scheduler.cancel(job)     # the client went away: its queued work is dropped, rows stop
    scheduler.close()         # no new jobs; finish everything accepted, then the thread exits

Batching policy: waves. A wave is the longest FIFO run of queued prompts (each with its job's n
rows) that fits `max_batch` rows and the KV budget, taken when the previous wave ends (after
waiting up to `gather_s` for more requests while they keep arriving); requests that arrive
while a wave runs join the next one. A wave decodes in segments of `segment`
steps (`inference.engine.Wave`); between segments the thread streams new text, applies stop
strings and drops rows whose client disconnected, and a job is answered as soon as its own
rows finish. docs/serve.md says why waves and not per-step joining.

Rows of one prompt are grouped (n samples share one prefill); a wave uses one group size, the
power of two at or above the first job's n, so prompts whose n rounds to another size wait for
a later wave. Requests that only need their prompt's log-probs (echo + logprobs, max_tokens
<= 1: lm-eval's log-likelihoods) are scored together in one forward pass per chunk, before the
next wave, and take their one token from that pass.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from typing import Any

from phi4_jax.inference.engine import RowSpec, Wave
from phi4_jax.serve import scoring_jobs
from phi4_jax.serve.jobs import Job, TextState
from phi4_jax.serve.protocol import MAX_LOGPROBS, APIError

log = logging.getLogger(__name__)

MAX_WAVE_SLOTS = 1 << 16  # KV slots of a wave (prompt + generated tokens over its rows)
# After the first request of an idle spell, wait this long for more before starting a wave:
# clients whose answers left together come back a few ms apart, and without the wait the
# first one back would start a wave of one while the rest wait for it to finish.
GATHER_S = 0.02


def _pow2(n: int) -> int:
    return 1 << (max(int(n), 1) - 1).bit_length()


class Scheduler:
    """See the module docstring. Thread-safe `submit` / `cancel` / `close` / `stats`."""

    def __init__(self, model: Any, codec: Any, *, max_batch: int = 32, max_queue: int = 64,
                 segment: int = 8, gather_s: float = GATHER_S):
        self.model, self.codec = model, codec
        self.max_batch, self.max_queue, self.segment = max_batch, max_queue, segment
        self.gather_s = gather_s
        self.pad_id = int(model.config.pad_token_id if model.config.pad_token_id is not None
                          and 0 <= model.config.pad_token_id < model.config.vocab_size else 0)
        self._cv = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._closed = False
        self.running_rows = 0
        self.waves = 0
        self._wave_seconds = 1.0  # moving average, for Retry-After
        self._thread = threading.Thread(target=self._loop, name="phi4-scheduler", daemon=True)
        self._thread.start()

    # -- the request side ----------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._cv:
            if self._closed:
                raise APIError(503, "the server is shutting down", kind="server_error",
                               code="shutting_down")
            waiting = sum(not j.started() for j in self._queue)
            if waiting >= self.max_queue:
                retry = max(1, math.ceil(self._wave_seconds))
                raise APIError(429, f"the request queue is full ({self.max_queue} waiting); "
                               f"retry in about {retry} s", code="queue_full",
                               kind="rate_limit_error", headers={"Retry-After": str(retry)})
            self._queue.append(job)
            self._cv.notify()

    def cancel(self, job: Job) -> None:
        """Marks the job cancelled: unscheduled prompts are dropped, running rows stop at the
        next segment boundary (the wave ends early when no live row is left)."""
        with self._cv:
            job.cancelled = True
            self._cv.notify()

    def close(self, timeout: float | None = None) -> None:
        """Stops accepting jobs and waits until every accepted one is finished."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        with self._cv:
            return {"queued_requests": sum(not j.started() for j in self._queue),
                    "running_rows": self.running_rows, "waves": self.waves,
                    "accepting": not self._closed}

    # -- the thread ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                self._queue = collections.deque(j for j in self._queue if not self._drop(j))
                while not self._queue and not self._closed:
                    self._cv.wait()
                    self._queue = collections.deque(j for j in self._queue
                                                    if not self._drop(j))
                if not self._queue:
                    return  # closed and drained
                self._gather()
                to_score = [j for j in self._queue if j.score_prompt and not j.scored]
                wave = [] if to_score else self._take_wave()
            try:
                if to_score:
                    scoring_jobs.score(self.model, self.codec, to_score, self.max_batch)
                    for job in to_score:
                        self._settle(job)
                elif wave:
                    self._run_wave(wave)
            except Exception as e:  # noqa: BLE001 - answer the requests, keep serving
                log.exception("decoding failed")
                for job in {id(j): j for j in to_score + [g[0] for g in wave]}.values():
                    self._fail(job, e)

    def _gather(self) -> None:
        """Waits up to `gather_s` while new requests keep arriving and the rows waiting do not
        fill a wave (caller holds the lock)."""
        deadline = time.monotonic() + self.gather_s
        while not self._closed:
            rows = sum(j.n * (len(j.prompts) - j.next_group) for j in self._queue)
            left = deadline - time.monotonic()
            if rows >= self.max_batch or left <= 0:
                return
            before = len(self._queue)
            self._cv.wait(left)
            if len(self._queue) == before:
                return  # nothing new within the window

    def _drop(self, job: Job) -> bool:
        """Whether a queued job leaves the queue: cancelled, or all its work is scheduled."""
        if job.cancelled:
            for c in job.choices:
                if not c.finished:
                    c.finish_reason = "cancelled"
            return True
        if job.score_prompt and not job.scored:
            return False
        if not job.needs_decode:
            for c in job.choices:  # max_tokens 0: nothing to generate
                c.finish_reason = c.finish_reason or "length"
            self._settle(job)
            return True
        return job.next_group >= len(job.prompts)

    def _take_wave(self) -> list[tuple[Job, int]]:
        """(job, prompt index) groups for the next wave (caller holds the lock)."""
        head = next((j for j in self._queue if j.needs_decode and not j.cancelled), None)
        if head is None:
            return []
        group = _pow2(head.n)
        per_wave = 1 << int(math.log2(max(self.max_batch // group, 1)))
        groups: list[tuple[Job, int]] = []
        prompt_len = new = 0
        for job in self._queue:
            if not job.needs_decode or job.cancelled or _pow2(job.n) != group:
                continue
            while job.next_group < len(job.prompts) and len(groups) < per_wave:
                p = len(job.prompts[job.next_group])
                pl, nw = max(prompt_len, p), max(new, job.max_tokens)
                slots = _pow2(len(groups) + 1) * (pl + group * nw)
                if groups and slots > MAX_WAVE_SLOTS:
                    return groups
                groups.append((job, job.next_group))
                job.next_group += 1
                prompt_len, new = pl, nw
            if len(groups) >= per_wave:
                break
        return groups

    def _run_wave(self, groups: list[tuple[Job, int]]) -> None:
        started = time.monotonic()
        group = _pow2(groups[0][0].n)
        rows: list[RowSpec | None] = []
        owners: list[tuple[Job, Any] | None] = []
        for job, i in groups:
            for j in range(group):
                if j < job.n:
                    choice = job.choices[i * job.n + j]
                    rows.append(RowSpec(job.seed, choice.index, job.sampling, job.max_tokens))
                    owners.append((job, choice))
                else:
                    rows.append(None)
                    owners.append(None)
        jobs = list({id(job): job for job, _ in groups}.values())
        texts = {id(job): TextState(self.codec, job.stops) for job in jobs}
        top_n = MAX_LOGPROBS if any(job.top_n is not None for job in jobs) else 0
        wave = Wave.start(self.model, [job.prompts[i] for job, i in groups], group, rows,
                          stop_tokens=self.codec.stop_ids, pad_id=self.pad_id,
                          width=self.segment, top_n=top_n)
        with self._cv:
            self.running_rows, self.waves = sum(r is not None for r in rows), self.waves + 1
        cancel: list[int] = []
        try:
            while not wave.finished:
                seg = wave.advance(cancel)
                cancel = self._absorb(seg, owners, texts)
                for job in jobs:
                    self._settle(job)
                with self._cv:
                    self.running_rows = int((~seg.done).sum()) - len(cancel)
        finally:
            with self._cv:
                self.running_rows = 0
        elapsed = time.monotonic() - started
        self._wave_seconds = 0.8 * self._wave_seconds + 0.2 * elapsed

    def _absorb(self, seg: Any, owners: list, texts: dict) -> list[int]:
        """Adds one segment's tokens to their choices; returns rows to stop (stop strings,
        cancelled jobs)."""
        cancel = []
        stop_ids = set(self.codec.stop_ids)
        for b, owner in enumerate(owners):
            if owner is None:
                continue
            job, choice = owner
            if choice.finished:
                if not seg.done[b]:
                    cancel.append(b)
                continue
            if job.cancelled:
                choice.finish_reason = "cancelled"
                cancel.append(b)
                continue
            k = int(seg.count[b])
            toks = seg.tokens[b, :k].tolist()
            lps = seg.logprobs[b, :k].tolist()
            top = None
            if seg.top_ids is not None and job.top_n is not None:
                top = [list(zip(seg.top_ids[b, t, :job.top_n].tolist(),
                                seg.top_logprobs[b, t, :job.top_n].tolist())) for t in range(k)]
            choice.generated += k
            ended_by_token = bool(seg.stopped[b]) and k and toks[-1] in stop_ids
            if ended_by_token:  # the stop token is not part of the text or the log-probs
                toks, lps, top = toks[:-1], lps[:-1], None if top is None else top[:-1]
            if texts[id(job)].add(choice, toks, lps, top):
                choice.finish_reason = "stop"
                if not seg.done[b]:
                    cancel.append(b)
            elif seg.done[b]:
                choice.finish_reason = "stop" if seg.stopped[b] else "length"
        return cancel

    def _settle(self, job: Job) -> None:
        """Streams what is new; answers the job when all its choices are finished."""
        if job.stream and not job.cancelled:
            texts = TextState(self.codec, job.stops)
            deltas = []
            for c in job.choices:
                before = (c.sent, c.sent_tokens)
                text, first = texts.delta(c)
                if text or (c.finished and not c.announced) or (c.sent, c.sent_tokens) != before:
                    deltas.append((c, text, first))
                    c.announced = c.finished
            if deltas:
                job.sink(("delta", deltas))
        if job.complete and not job.answered:
            job.answered = True
            job.sink(("done", job))

    def _fail(self, job: Job, err: Exception) -> None:
        if not job.answered:
            job.answered = True
            for c in job.choices:
                c.finish_reason = c.finish_reason or "error"
            job.sink(("error", APIError(500, f"decoding failed: {type(err).__name__}: {err}",
                                        kind="server_error")))
