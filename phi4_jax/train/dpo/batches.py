"""DPO pairs -> packed batches: the `dpo` objective's input (data.source='pairs').

    pairs = load_pairs(["pts/pairs.jsonl", "refusal/pairs.jsonl"], vocab_size=V, seq_len=T)
    it = PairIterator(pairs, seq_len=T, global_batch=B, seed=0, max_pairs_per_row=16,
                      host=h, host_count=H, reference=logps)   # reference: [N, 2] or None
    batch = next(it)     # this host's [B / H, T] arrays; it.get_state() / it.set_state(s)

Token ids travel as written: a pair's two sequences are `prompt_ids + chosen_ids` and
`prompt_ids + rejected_ids` (no decode, no EOS appended, no BOS inserted). A sequence of L
tokens takes L - 1 positions (inputs s[:-1], targets s[1:]); `loss_mask` is 1 exactly on the
targets that are completion tokens, so a completion of C tokens has C scored positions (a PTS
pair: one). Pair k of a row is segments 2k+1 (chosen) and 2k+2 (rejected), positions from 0 in
each; padding is segment 0, token 0. `ref_logps` carries each sequence's cached reference
log-prob at its last scored position (0 elsewhere; all 0 without a cache).

Reading: every file goes through `phi4_jax.posttrain.records.iter_records` (malformed lines
counted by field, never fatal). Also skipped and counted: a pair whose two sequences do not fit
one row together (`too_long`: 2 P + C + R - 2 > T), and one written by another tokenizer when
`dpo.tokenizer` is set. Ids are kept in flat numpy arrays (judge-scale pair sets fit).

Order: epoch e visits the pairs in argsort(PCG64(seed, e)) order, packed best-fit-decreasing
(`phi4_jax.data.row_layout.best_fit`) window by window (`window` pairs, at most
`max_pairs_per_row` per row), rows shuffled within a window. The row stream is epoch 0's rows,
then epoch 1's, ...; global step s is rows [s B, (s + 1) B) and host h of H takes rows
[s B + h B / H, s B + (h + 1) B / H). A batch is a pure function of (pairs, seed, s): the JSON
state is the next step plus what the stream depends on, checked on restore; it holds no host
index.

    python -m phi4_jax.train.dpo.batches plan --pairs F.jsonl --seq_len 4096 --global_batch 64
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from phi4_jax import cli
from phi4_jax.data.row_layout import best_fit, name_key
from phi4_jax.io.bad_input import BadInputReport
from phi4_jax.posttrain.records import fingerprint_ids, iter_records
from phi4_jax.train.inputs import StepIterator

STATE_VERSION = 1
WINDOW = 4096
SEQUENCE_KEYS = ("tokens", "targets", "positions", "segment_ids", "loss_mask")
REFERENCE_KEY = "ref_logps"  # cached reference log-probs (float32 [B, T])


@dataclasses.dataclass
class PairSet:
    """Pairs as flat arrays: pair i's prompt, chosen and rejected ids are `ids[bounds[i, 0]:
    bounds[i, 1]]`, `[bounds[i, 1]:bounds[i, 2]]`, `[bounds[i, 2]:bounds[i, 3]]`."""

    ids: np.ndarray  # int32 [total]
    bounds: np.ndarray  # int64 [N, 4]
    names: list[str]
    fingerprint: str  # records.fingerprint_ids of the pairs' parts (= pairs_fingerprint)
    report: dict[str, Any]

    def __len__(self) -> int:
        return len(self.names)

    def parts(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        b = self.bounds[i]
        return self.ids[b[0]:b[1]], self.ids[b[1]:b[2]], self.ids[b[2]:b[3]]

    def row_lengths(self) -> np.ndarray:
        """Positions a pair takes in a row: (P + C - 1) + (P + R - 1)."""
        p, c, r = np.diff(self.bounds, axis=1).T
        return 2 * p + c + r - 2


def load_pairs(paths: str | Sequence[str], *, vocab_size: int | None, seq_len: int,
               tokenizer: str | None = None) -> PairSet:
    """Valid pairs of every file, in file order; the report counts what was skipped and why."""
    if isinstance(paths, str):
        paths = [p for p in paths.split(",") if p.strip()]
    ids: list[np.ndarray] = []
    bounds: list[tuple[int, int, int, int]] = []
    names: list[str] = []
    skipped: collections.Counter = collections.Counter()
    examples: list[str] = []
    tokenizers: collections.Counter = collections.Counter()
    report = BadInputReport()
    offset = 0
    for path in paths:
        for pair in iter_records(path, "pair", report, vocab_size=vocab_size):
            p, c, r = len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids)
            problem = None
            if tokenizer and pair.tokenizer != tokenizer:
                problem = ("tokenizer", f"{pair.tokenizer!r} is not dpo.tokenizer={tokenizer!r}")
            elif 2 * p + c + r - 2 > seq_len:
                problem = ("too_long", f"2 x {p} prompt + {c} chosen + {r} rejected - 2 = "
                                       f"{2 * p + c + r - 2} positions > data.seq_len={seq_len}")
            if problem:
                skipped[problem[0]] += 1
                if len(examples) < 10:
                    examples.append(f"{path}: id {pair.id!r}: {problem[1]}")
                continue
            tokenizers[pair.tokenizer] += 1
            ids.append(np.asarray(pair.prompt_ids + pair.chosen_ids + pair.rejected_ids,
                                  np.int32))
            bounds.append((offset, offset + p, offset + p + c, offset + p + c + r))
            names.append(pair.id)
            offset += p + c + r
    if len(tokenizers) > 1:
        raise ValueError(f"dpo.pairs={','.join(paths)} mixes tokenizers {dict(tokenizers)}; "
                         "set dpo.tokenizer to the policy's to keep only its pairs")
    first = [w for f in report.files.values() for w in f.first.values()]
    summary = {"files": report.to_json()["files"], "kept": len(names),
               "malformed": dict(report.totals()), "skipped": dict(skipped),
               "examples": first[:10] + examples, "tokenizer": next(iter(tokenizers), None)}
    out = PairSet(np.concatenate(ids) if ids else np.zeros(0, np.int32),
                  np.asarray(bounds, np.int64).reshape(-1, 4), names, "", summary)
    out.fingerprint = fingerprint_ids(out.parts(i) for i in range(len(out)))
    return out


def epoch_order(num_pairs: int, seed: int, epoch: int) -> np.ndarray:
    """The pairs' visiting order in `epoch` (raw PCG64 draws: stable across numpy versions)."""
    bits = np.random.PCG64(np.random.SeedSequence([seed, *name_key("dpo_pairs"), epoch]))
    return np.argsort(bits.random_raw(num_pairs), kind="stable").astype(np.int64)


def layout(pairs: PairSet, *, seq_len: int, max_pairs_per_row: int,
           order: np.ndarray | None = None, seed: int = 0, epoch: int = 0,
           window: int = WINDOW) -> list[np.ndarray]:
    """Rows (arrays of pair indices) of one epoch; `order` None means the epoch's shuffle."""
    order = epoch_order(len(pairs), seed, epoch) if order is None else np.asarray(order)
    lengths = pairs.row_lengths()[order]
    shuffle = np.random.default_rng([seed, *name_key("dpo_rows"), epoch])
    rows: list[np.ndarray] = []
    for w0 in range(0, len(order), window):
        bins = best_fit(lengths[w0:w0 + window], seq_len, max_items=max_pairs_per_row)
        for b in shuffle.permutation(len(bins)):
            rows.append(order[w0 + np.asarray(bins[b], np.int64)])
    return rows


def fill(pairs: PairSet, rows: Sequence[np.ndarray], seq_len: int,
         reference: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Batch arrays [len(rows), seq_len] for rows of pair indices (module docstring)."""
    shape = (len(rows), seq_len)
    out = {k: np.zeros(shape, np.int32) for k in SEQUENCE_KEYS[:4]}
    out["loss_mask"] = np.zeros(shape, np.float32)
    out[REFERENCE_KEY] = np.zeros(shape, np.float32)
    for r, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row):
            prompt, chosen, rejected = pairs.parts(int(i))
            for side, completion in enumerate((chosen, rejected)):
                seq = np.concatenate([prompt, completion])
                n = len(seq) - 1
                span = slice(at, at + n)
                out["tokens"][r, span] = seq[:-1]
                out["targets"][r, span] = seq[1:]
                out["positions"][r, span] = np.arange(n)
                out["segment_ids"][r, span] = 2 * k + 1 + side
                out["loss_mask"][r, at + len(prompt) - 1:at + n] = 1.0
                if reference is not None:
                    out[REFERENCE_KEY][r, at + n - 1] = reference[int(i), side]
                at += n
        if at > seq_len:
            raise ValueError(f"row {r}: {at} positions exceed data.seq_len={seq_len}")
    return out


class PairIterator(StepIterator):
    """This host's DPO batches; JSON state (`get_state` / `set_state`), exact resume."""

    def __init__(self, pairs: PairSet, *, seq_len: int, global_batch: int, seed: int = 0,
                 max_pairs_per_row: int = 16, host: int = 0, host_count: int = 1,
                 reference: np.ndarray | None = None, window: int = WINDOW):
        if not len(pairs):
            raise ValueError("no pairs to train on")
        if global_batch % host_count:
            raise ValueError(f"train.global_batch={global_batch} does not split over "
                             f"{host_count} hosts")
        if reference is not None and reference.shape != (len(pairs), 2):
            raise ValueError(f"reference log-probs {reference.shape} for {len(pairs)} pairs")
        self.pairs, self.reference = pairs, reference
        self.seq_len, self.global_batch, self.seed = seq_len, global_batch, seed
        self.max_pairs_per_row, self.window = max_pairs_per_row, window
        self.host, self.host_count = host, host_count
        self.step = 0
        self._epochs: collections.OrderedDict[int, list[np.ndarray]] = collections.OrderedDict()
        self._row_starts = [0]  # first global row of each epoch, extended on demand

    def epoch_rows(self, epoch: int) -> list[np.ndarray]:
        if epoch not in self._epochs:
            self._epochs[epoch] = layout(self.pairs, seq_len=self.seq_len, seed=self.seed,
                                         max_pairs_per_row=self.max_pairs_per_row, epoch=epoch,
                                         window=self.window)
            while len(self._epochs) > 2:
                self._epochs.popitem(last=False)
        return self._epochs[epoch]

    def locate(self, row: int) -> tuple[int, int]:
        """(epoch, row within it) of global row `row`."""
        while self._row_starts[-1] <= row:
            epoch = len(self._row_starts) - 1
            self._row_starts.append(self._row_starts[-1] + len(self.epoch_rows(epoch)))
        epoch = bisect.bisect_right(self._row_starts, row) - 1
        return epoch, row - self._row_starts[epoch]

    def rows(self, step: int) -> list[np.ndarray]:
        per_host = self.global_batch // self.host_count
        first = step * self.global_batch + self.host * per_host
        return [self.epoch_rows(e)[i] for e, i in map(self.locate, range(first, first + per_host))]

    def batch(self, step: int) -> dict[str, np.ndarray]:
        return fill(self.pairs, self.rows(step), self.seq_len, self.reference)

    def _plan(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "fingerprint": self.pairs.fingerprint,
                "num_pairs": len(self.pairs), "seq_len": self.seq_len,
                "global_batch": self.global_batch, "seed": self.seed,
                "max_pairs_per_row": self.max_pairs_per_row, "window": self.window,
                "reference": self.reference is not None}

    def get_state(self) -> dict[str, Any]:
        return {"step": self.step, **self._plan()}

    def set_state(self, state: dict[str, Any]) -> None:
        diffs = [f"{k}: checkpoint {state.get(k)!r} != now {v!r}"
                 for k, v in self._plan().items() if state.get(k) != v]
        if diffs:
            raise ValueError("the DPO pair stream differs from the checkpoint's (dpo.pairs, "
                             "data.seq_len, data.seed, train.global_batch or dpo settings "
                             "changed): " + "; ".join(diffs))
        self.step = int(state["step"])


def describe(pairs: PairSet, rows: list[np.ndarray], seq_len: int, global_batch: int) -> str:
    lengths = pairs.row_lengths()
    used = int(sum(lengths[r].sum() for r in rows))
    fill_share = used / max(len(rows) * seq_len, 1)
    return (f"{len(pairs)} pairs -> {len(rows)} rows of {seq_len} per epoch "
            f"({len(pairs) / max(len(rows), 1):.2f} pairs/row, fill {fill_share:.1%}), "
            f"{len(rows) / global_batch:.1f} steps of {global_batch} rows per epoch")


def main(argv: Sequence[str] | None = None) -> None:
    parser = cli.parser("python -m phi4_jax.train.dpo.batches",
                        "Rows, pairs per row and steps per epoch of a DPO pair set.",
                        example="python -m phi4_jax.train.dpo.batches plan "
                                "--pairs=workdirs/pts/pairs.jsonl --seq_len=4096 "
                                "--global_batch=64")
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="rows, pairs per row and steps per epoch of a pair set",
                          formatter_class=parser.formatter_class)
    plan.add_argument("--pairs", required=True, help="JSONL file(s), comma-separated")
    plan.add_argument("--seq_len", type=int, default=4096, help="tokens per row")
    plan.add_argument("--global_batch", type=int, default=64, help="rows per step")
    plan.add_argument("--max_pairs_per_row", type=int, default=16, help="packing bound")
    plan.add_argument("--vocab_size", type=int, default=None,
                      help="reject pairs with ids at or above this")
    plan.add_argument("--epochs", type=float, default=1.0, help="epochs to size train.steps for")
    args = parser.parse_args(argv)
    missing = [p for p in args.pairs.split(",") if not os.path.isfile(p)]
    if missing:
        raise cli.UsageError(f"--pairs: no such file {', '.join(missing)}")
    pairs = load_pairs(args.pairs, vocab_size=args.vocab_size, seq_len=args.seq_len)
    print(json.dumps(pairs.report, indent=2))
    rows = layout(pairs, seq_len=args.seq_len, max_pairs_per_row=args.max_pairs_per_row)
    print(describe(pairs, rows, args.seq_len, args.global_batch))
    print(f"train.steps for {args.epochs:g} epochs: "
          f"{int(np.ceil(args.epochs * len(rows) / args.global_batch))}")


if __name__ == "__main__":
    cli.run(main)
