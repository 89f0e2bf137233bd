"""DPO losses and sequence log-probs: pure functions of arrays (docs/posttrain_training.md).

A pair is (prompt x, chosen y_w, rejected y_l) in token ids. With the policy pi and the frozen
reference pi_ref, each sequence's log-probability is the SUM over its completion tokens only
(prompt tokens are masked), and

    h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)]

Losses per pair (beta > 0; eps = label_smoothing in [0, 0.5)):

    sigmoid       -log s(beta h)                        DPO (Rafailov et al. 2023, eq. 7)
    conservative  -(1 - eps) log s(beta h) - eps log s(-beta h)
                                                        cDPO (Mitchell 2023): each label flipped
                                                        with probability eps
    robust        [-(1 - eps) log s(beta h) + eps log s(-beta h)] / (1 - 2 eps)
                                                        rDPO (Chowdhury et al. 2024): unbiased
                                                        under label noise of rate eps
    ipo           (h - 1 / (2 beta))^2                  IPO (Azar et al. 2023), tau = beta, with
                                                        sequence log-prob sums as in the paper
    hinge         max(0, 1 - beta h)                    hinge-norm (Liu et al. 2023, RSO; SLiC's
                                                        hinge normalized by the reference)

with s the logistic sigmoid. Implicit rewards: r_w = beta (log pi(y_w|x) - log pi_ref(y_w|x)),
r_l likewise; reported as rewards/chosen, rewards/rejected, rewards/margins (r_w - r_l),
rewards/accuracies (r_w > r_l), logps/chosen, logps/rejected (policy sums) and loss, each the
mean over the global batch's pairs (the step divides the sums by `weight`, the pair count).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from phi4_jax.model import merge_for_compute
from phi4_jax.train.losses import target_logprobs

LOSSES = ("sigmoid", "conservative", "robust", "ipo", "hinge")


def check_loss(loss_type: str, beta: float, label_smoothing: float) -> None:
    """Rejects an unknown loss or out-of-range hyperparameters, naming the config field."""
    if loss_type not in LOSSES:
        raise ValueError(f"dpo.loss={loss_type!r}; choose one of {list(LOSSES)}")
    if not beta > 0:
        raise ValueError(f"dpo.beta={beta} must be > 0")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo.label_smoothing={label_smoothing} must be in [0, 0.5)")
    if label_smoothing and loss_type not in ("conservative", "robust"):
        raise ValueError(f"dpo.label_smoothing={label_smoothing} applies to dpo.loss="
                         f"'conservative' or 'robust', not {loss_type!r}")


def preference_loss(policy_chosen: jax.Array, policy_rejected: jax.Array,
                    ref_chosen: jax.Array, ref_rejected: jax.Array, *, loss_type: str,
                    beta: float, label_smoothing: float = 0.0
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(loss, chosen reward, rejected reward) per pair from sequence log-probs (any shape)."""
    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    h = chosen - rejected
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = jax.nn.softplus(-beta * h)  # -log s(x) = softplus(-x)
    elif loss_type == "conservative":
        losses = (1 - eps) * jax.nn.softplus(-beta * h) + eps * jax.nn.softplus(beta * h)
    elif loss_type == "robust":
        losses = ((1 - eps) * jax.nn.softplus(-beta * h)
                  - eps * jax.nn.softplus(beta * h)) / (1 - 2 * eps)
    elif loss_type == "ipo":
        losses = jnp.square(h - 1 / (2 * beta))
    elif loss_type == "hinge":
        losses = jax.nn.relu(1 - beta * h)
    else:
        raise ValueError(f"dpo.loss={loss_type!r}; choose one of {list(LOSSES)}")
    return losses, beta * chosen, beta * rejected


def segment_sums(values: jax.Array, segment_ids: jax.Array, num_segments: int) -> jax.Array:
    """[B, T] -> [B, num_segments]: column k sums `values` over positions of segment k + 1.

    An elementwise select and a sum (not an einsum), so TPU matmul precision never rounds the
    log-probabilities.
    """
    ids = jnp.arange(1, num_segments + 1, dtype=segment_ids.dtype)
    hit = segment_ids[..., None] == ids  # [B, T, K]
    return jnp.sum(jnp.where(hit, values[..., None].astype(jnp.float32), 0.0), axis=1)


def sequence_logps(graphdef: nnx.GraphDef, params: Any, batch: Mapping[str, jax.Array], *,
                   num_segments: int, vocab_chunks: int = 1) -> jax.Array:
    """Each segment's sum of log p(target) over its loss-mask positions: float32 [B, K]."""
    model = merge_for_compute(graphdef, params)
    hidden = model.hidden(batch["tokens"], batch["positions"], batch["segment_ids"])
    logprob, _ = target_logprobs(hidden, model.output_weight(), batch["targets"], vocab_chunks)
    masked = logprob * batch["loss_mask"].astype(jnp.float32)
    return segment_sums(masked, batch["segment_ids"], num_segments)


def split_pairs(sums: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[B, 2P] segment sums -> (chosen [B, P], rejected [B, P])."""
    return sums[:, 0::2], sums[:, 1::2]


def pair_present(segment_ids: jax.Array, max_pairs: int) -> jax.Array:
    """bool [B, P]: pair k of the row exists (its rejected segment 2k+2 is in the row)."""
    return jnp.max(segment_ids, axis=1, keepdims=True) >= 2 * jnp.arange(1, max_pairs + 1)
