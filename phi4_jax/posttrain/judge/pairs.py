"""What the judge workflow builds: any-vs-any DPO pairs of whole replies, ranked by a judge.

Pairs are built among a prompt's judged replies: the reply with the higher accuracy score
(by="accuracy") or the higher mean of the three scores (by="overall") is chosen; both sides'
judgements are kept in `meta`. Ids are the policy tokenizer's: the chat-rendered prompt, and
each reply with its end-of-turn token when the reply is complete.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

from phi4_jax.posttrain.judge.judgement import Judgement
from phi4_jax.posttrain.records import Pair
from phi4_jax.posttrain.sampler import Sampler


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A reply: text for the judge, token ids for the pair (its end-of-turn token included if
    the reply is complete), and where it came from."""

    text: str
    ids: tuple[int, ...]
    source: str = ""


@dataclasses.dataclass(frozen=True)
class JudgeItem:
    id: str
    prompt: str
    prompt_ids: tuple[int, ...]
    candidates: tuple[Candidate, ...]
    reference: str | None = None


def make_item(sampler: Sampler, id: str, prompt: str, replies: Sequence[tuple[str, str]],
              *, end_ids: Sequence[int] = (), reference: str | None = None) -> JudgeItem:
    """Tokenizes a prompt (chat template) and (text, source) replies once, for the pairs."""
    return JudgeItem(id, prompt, tuple(sampler.render([{"role": "user", "content": prompt}])),
                     tuple(Candidate(t, tuple(sampler.encode(t)) + tuple(end_ids), s)
                           for t, s in replies), reference)


@dataclasses.dataclass
class PairStats:
    """Candidate pairs that gave no DPO pair: scores within min_margin (`ties`), or the same
    token ids on both sides (`identical`)."""

    pairs: int = 0
    ties: int = 0
    identical: int = 0


def build_pairs(item: JudgeItem, judgements: Sequence[Judgement | None], *, tokenizer: str,
                by: Literal["accuracy", "overall"] = "accuracy", min_margin: float = 1e-6,
                judge_name: str = "", stats: PairStats | None = None) -> list[Pair]:
    """Any-vs-any pairs among judged candidates whose `by` score differs by >= min_margin."""
    if by not in ("accuracy", "overall"):
        raise ValueError(f"by must be 'accuracy' or 'overall', got {by!r}")
    stats = stats if stats is not None else PairStats()
    scored = [(j, getattr(g, by), g) for j, g in enumerate(judgements) if g is not None]
    pairs = []
    for a, (i, si, gi) in enumerate(scored):
        for j, sj, gj in scored[a + 1:]:
            if abs(si - sj) < min_margin:
                stats.ties += 1
                continue
            (hi, ghi), (lo, glo) = ((i, gi), (j, gj)) if si > sj else ((j, gj), (i, gi))
            c, r = item.candidates[hi], item.candidates[lo]
            if c.ids == r.ids:
                stats.identical += 1
                continue
            pairs.append(Pair(f"judge/{item.id}/{by}/{hi}>{lo}", item.prompt_ids, c.ids, r.ids,
                              "judge", tokenizer,
                              {"question_id": item.id, "by": by, "judge": judge_name,
                               "chosen": {"index": hi, "source": c.source} | ghi.to_json(),
                               "rejected": {"index": lo, "source": r.source} | glo.to_json()}))
    stats.pairs += len(pairs)
    return pairs
