"""The `dpo` objective: its config section, batch, frozen reference and input (registered).

Losses and log-probs are `phi4_jax.train.dpo.losses`; the batch layout, built by
`phi4_jax.train.dpo.batches`: the next-token arrays `tokens`, `targets`, `positions`,
`segment_ids`, `loss_mask` [B, T]; pair k of a row is segments 2k+1 (prompt + chosen) and
2k+2 (prompt + rejected), packed back to back, each with positions from 0, so they never attend
to each other. `loss_mask` is 1 exactly where the target is a completion token: a single-token
completion has exactly one scored position.

The reference pi_ref, two ways:

    dpo.reference_cache=True   `ref_logps` [B, T] float32 in the batch holds each sequence's
                               reference log-prob at one position of its segment (0
                               elsewhere; segment sums recover it), computed once before
                               training and cached on disk (`phi4_jax.train.dpo.reference`)
    dpo.reference_cache=False  the frozen tree {'reference': params} (sharded like the
                               policy, checkpointed) run under stop_gradient every step: the
                               start parameters, or train.reference_from's (`load_frozen`)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from phi4_jax.train import checkpoint as ckpt_lib
from phi4_jax.train import objectives
from phi4_jax.train.dpo import batches, losses, reference
from phi4_jax.train.objectives import TOKEN_FIELDS, BatchField, Objective

if TYPE_CHECKING:
    from phi4_jax.train.config import RunConfig
    from phi4_jax.train.program import Program

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DPOConfig:
    """The experiment's `dpo` section (defaults: experiments/base.py)."""

    pairs: str | None  # phi4_jax.pair/v1 JSONL file(s), comma-separated
    loss: str  # sigmoid | conservative | robust | ipo | hinge (losses.LOSSES)
    beta: float  # the implicit reward's scale (> 0)
    label_smoothing: float  # eps of conservative / robust, in [0, 0.5)
    max_pairs_per_row: int  # packing: pairs per data.seq_len row, at most
    reference_cache: bool  # reference log-probs cached on disk; else frozen parameters
    cache_dir: str | None  # where the cache lives; None: WORKDIR/reference_cache
    tokenizer: str | None  # keep only pairs written by this tokenizer


@dataclass(frozen=True)
class DPO(Objective):
    """The DPO objective (module docstring; losses.py has the formulas)."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    max_pairs_per_row: int = 16
    cached_reference: bool = True
    vocab_chunks: int = 1
    reference_from: str | None = None  # fills the frozen reference (cache off)
    name: ClassVar[str] = "dpo"

    def __post_init__(self):
        losses.check_loss(self.loss_type, self.beta, self.label_smoothing)
        if self.max_pairs_per_row < 1:
            raise ValueError(f"dpo.max_pairs_per_row={self.max_pairs_per_row} must be >= 1")

    @property
    def batch_spec(self) -> Mapping[str, BatchField]:
        cached = {batches.REFERENCE_KEY: BatchField(np.float32)} if self.cached_reference else {}
        return MappingProxyType({**TOKEN_FIELDS, **cached})

    def weight(self, batch):
        """The number of pairs: each row holds max(segment_ids) / 2 of them."""
        return jnp.sum(jnp.max(batch["segment_ids"], axis=1) // 2).astype(jnp.float32)

    def pair_logps(self, graphdef, params, batch) -> tuple[jax.Array, jax.Array]:
        sums = losses.sequence_logps(graphdef, params, batch,
                                     num_segments=2 * self.max_pairs_per_row,
                                     vocab_chunks=self.vocab_chunks)
        return losses.split_pairs(sums)

    def loss(self, graphdef, params, frozen, batch, rng):
        del rng  # no dropout
        policy_chosen, policy_rejected = self.pair_logps(graphdef, params, batch)
        if self.cached_reference:
            ref = losses.segment_sums(batch[batches.REFERENCE_KEY], batch["segment_ids"],
                                      2 * self.max_pairs_per_row)
            ref_chosen, ref_rejected = losses.split_pairs(ref)
        else:
            ref_chosen, ref_rejected = jax.lax.stop_gradient(
                self.pair_logps(graphdef, frozen["reference"], batch))
        per_pair, reward_chosen, reward_rejected = losses.preference_loss(
            policy_chosen, policy_rejected, ref_chosen, ref_rejected, loss_type=self.loss_type,
            beta=self.beta, label_smoothing=self.label_smoothing)
        present = losses.pair_present(batch["segment_ids"], self.max_pairs_per_row)

        def total(x):
            return jnp.sum(jnp.where(present, x.astype(jnp.float32), 0.0))

        stats = {"loss": total(per_pair),
                 "rewards/chosen": total(reward_chosen),
                 "rewards/rejected": total(reward_rejected),
                 "rewards/margins": total(reward_chosen - reward_rejected),
                 "rewards/accuracies": total(reward_chosen > reward_rejected),
                 "logps/chosen": total(policy_chosen),
                 "logps/rejected": total(policy_rejected)}
        return stats["loss"], stats

    def frozen(self, params):
        if self.cached_reference:
            return {}
        # A copy, not the same arrays: the step donates the state, and a buffer cannot be
        # donated twice.
        return {"reference": jax.tree.map(jnp.copy, params)}

    def load_frozen(self, program, state):
        """train.reference_from's parameters as the frozen reference (cache off)."""
        if self.cached_reference or not self.reference_from:
            return state
        params = ckpt_lib.restore_params(self.reference_from, program.abstract_state.params,
                                         program.state_shardings.params)
        return state._replace(frozen={**state.frozen, "reference": params})

    def inputs(self, run, program, workdir, *, host, host_count):
        """Pair batches of `dpo.pairs`, with cached reference log-probs when
        `dpo.reference_cache` (computed here with the program's model, or read)."""
        return pair_iterator(run, program, workdir, host=host, host_count=host_count)


def pair_iterator(run: RunConfig, program: Program, workdir: str, *, host: int,
                  host_count: int) -> batches.PairIterator:
    """The run's PairIterator; writes WORKDIR/pairs_report.json (what was kept and skipped)."""
    d, data, train = run.section("dpo"), run.data, run.train
    if not d.pairs:
        raise ValueError("dpo.pairs is not set: the phi4_jax.pair/v1 JSONL file(s) to train on "
                         "(comma-separated)")
    pairs = batches.load_pairs(d.pairs, vocab_size=program.model_config.vocab_size,
                               seq_len=data.seq_len, tokenizer=d.tokenizer)
    report = pairs.report
    log.info("dpo.pairs: %d kept; malformed %s; skipped %s", len(pairs), report["malformed"],
             report["skipped"])
    if host == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "pairs_report.json"), "w", encoding="utf-8") as f:
            json.dump({**report, "fingerprint": pairs.fingerprint}, f, indent=2)
    if not len(pairs):
        raise ValueError(f"dpo.pairs={d.pairs}: no usable pairs ({report}); see "
                         f"{os.path.join(workdir, 'pairs_report.json')}")
    logps = None
    if d.reference_cache:
        logps = reference.prepare(
            program, pairs, workdir, source=train.reference_from or train.init_from,
            seed=train.seed, cache_dir=d.cache_dir,
            scorer=reference.Scorer(program, d.max_pairs_per_row))
    it = batches.PairIterator(pairs, seq_len=data.seq_len, global_batch=train.global_batch,
                              seed=data.seed, max_pairs_per_row=d.max_pairs_per_row, host=host,
                              host_count=host_count, reference=logps)
    rows = it.epoch_rows(0)
    log.info("%s; train.steps=%d covers %.2f epochs", batches.describe(
        pairs, rows, data.seq_len, train.global_batch), train.steps,
        train.steps * train.global_batch / len(rows))
    return it


def from_run(run: RunConfig) -> DPO:
    """The DPO objective of a run: the `dpo` section, train.loss_vocab_chunks and
    train.reference_from; data.source must be 'pairs'."""
    if run.data.source != "pairs":
        raise ValueError(f"objective='dpo' reads preference pairs: set data.source='pairs' "
                         f"(got {run.data.source!r}) and dpo.pairs")
    d = run.section("dpo")
    return DPO(beta=d.beta, loss_type=d.loss, label_smoothing=d.label_smoothing,
               max_pairs_per_row=d.max_pairs_per_row, cached_reference=d.reference_cache,
               vocab_chunks=run.train.loss_vocab_chunks, reference_from=run.train.reference_from)


objectives.register("dpo", from_run, section=DPOConfig)
