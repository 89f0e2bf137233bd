"""DPO objective: losses vs numpy formulas, packed log-probs vs an unpacked model, real steps.

The model tests use the tiny preset with a 256-token vocabulary on one device; every jitted
function is compiled once per module.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiments
from phi4_jax.model import merge_for_compute
from phi4_jax.train import loop, objectives
from phi4_jax.train.config import RunConfig
from phi4_jax.train.dpo import batches, losses, reference
from phi4_jax.train.dpo.objective import DPO
from tests.train.dpo.conftest import ONE, VOCAB, small_config, synthetic_pairs, write_pairs


def numpy_loss(pc, pr, rc, rr, loss_type, beta, eps=0.0):
    """The published formulas, written out independently in float64."""
    h = (np.float64(pc) - rc) - (np.float64(pr) - rr)
    log_sigmoid = lambda x: -np.logaddexp(0.0, -x)  # noqa: E731
    if loss_type == "sigmoid":  # Rafailov et al. 2023, eq. 7
        return -log_sigmoid(beta * h)
    if loss_type == "conservative":  # cDPO: labels flipped with probability eps
        return -(1 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h)
    if loss_type == "robust":  # rDPO (Chowdhury et al. 2024)
        return (-(1 - eps) * log_sigmoid(beta * h) + eps * log_sigmoid(-beta * h)) / (1 - 2 * eps)
    if loss_type == "ipo":  # Azar et al. 2023: (h - 1/(2 tau))^2
        return (h - 1 / (2 * beta)) ** 2
    if loss_type == "hinge":  # RSO hinge-norm: max(0, 1 - beta h)
        return np.maximum(0.0, 1 - beta * h)
    raise ValueError(loss_type)


CASES = [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.0), ("conservative", 0.1, 0.2),
         ("robust", 0.3, 0.1), ("ipo", 0.1, 0.0), ("ipo", 1.0, 0.0), ("hinge", 0.2, 0.0)]


@pytest.mark.parametrize("loss_type,beta,eps", CASES)
def test_losses_and_rewards_equal_the_published_formulas(loss_type, beta, eps):
    rng = np.random.default_rng(0)
    pc, pr, rc, rr = (rng.normal(-20, 8, 64).astype(np.float32) for _ in range(4))
    per_pair, chosen, rejected = losses.preference_loss(pc, pr, rc, rr, loss_type=loss_type,
                                                       beta=beta, label_smoothing=eps)
    np.testing.assert_allclose(per_pair, numpy_loss(pc, pr, rc, rr, loss_type, beta, eps),
                               rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(chosen, beta * (np.float64(pc) - rc), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rejected, beta * (np.float64(pr) - rr), rtol=1e-5, atol=1e-5)
    # Policy == reference: h = 0.
    at_zero, _, _ = losses.preference_loss(pc, pr, pc, pr, loss_type=loss_type, beta=beta,
                                        label_smoothing=eps)
    expected = {"ipo": 1 / (4 * beta**2), "hinge": 1.0}.get(loss_type, math.log(2))
    np.testing.assert_allclose(at_zero, expected, rtol=1e-6)
    # Finite gradients, also far from the reference (|beta h| up to ~1e4).
    def total(p, rejected):
        return jnp.sum(losses.preference_loss(p, rejected, rc, rr, loss_type=loss_type, beta=beta,
                                           label_smoothing=eps)[0])

    for scale in (1.0, 1e3):
        grads = jax.grad(total, argnums=(0, 1))(pc * scale, pr * scale)
        assert all(np.isfinite(np.asarray(g)).all() for g in grads)


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="dpo.loss='kto'"):
        DPO(loss_type="kto")
    with pytest.raises(ValueError, match="dpo.beta=0"):
        DPO(beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing=0.1 applies to dpo.loss="):
        DPO(label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"in \[0, 0.5\)"):
        DPO(loss_type="robust", label_smoothing=0.5)
    config = experiments.get_config("phi4_dpo_pts:smoke")
    config.data.source = "mixture"
    with pytest.raises(ValueError, match="data.source='pairs'"):
        objectives.from_config(RunConfig.from_experiment(config))


@pytest.fixture(scope="module")
def frozen_program():
    return loop.build(small_config(reference_cache=False), devices=ONE)


@pytest.fixture(scope="module")
def scorer(frozen_program):
    return reference.Scorer(frozen_program, max_pairs_per_row=16)


def test_packed_logps_equal_each_pair_scored_alone(frozen_program, scorer, tmp_path):
    """Packing, prompt masking and 1- / 5-token completions against the plain model."""
    prog = frozen_program
    pairs = batches.load_pairs(write_pairs(tmp_path / "p.jsonl", synthetic_pairs(
        10, completion_lengths=(1, 5, 2))), vocab_size=VOCAB, seq_len=32)
    params = prog.init().params
    packed = scorer.logps(params, pairs)
    # Every sequence alone, unpacked, right-padded to 16 (causal: padding cannot reach back).
    seqs = [np.concatenate([pairs.parts(i)[0], pairs.parts(i)[1 + side]])
            for i in range(len(pairs)) for side in (0, 1)]
    tokens = np.zeros((len(seqs), 16), np.int32)
    for j, seq in enumerate(seqs):
        tokens[j, :len(seq)] = seq
    logp = np.asarray(jax.jit(lambda p, t: jax.nn.log_softmax(
        merge_for_compute(prog.graphdef, p)(t)))(params, tokens))
    for i in range(len(pairs)):
        prompt, *completions = pairs.parts(i)
        for side, completion in enumerate(completions):
            expected = sum(logp[2 * i + side, len(prompt) - 1 + j, completion[j]]
                           for j in range(len(completion)))
            np.testing.assert_allclose(packed[i, side], expected, rtol=1e-5, atol=1e-4)


def test_fill_scores_exactly_the_completion_tokens(tmp_path):
    pairs = batches.load_pairs(write_pairs(tmp_path / "p.jsonl", synthetic_pairs(
        6, completion_lengths=(1, 5))), vocab_size=VOCAB, seq_len=32)
    rows = batches.layout(pairs, seq_len=32, max_pairs_per_row=16, order=np.arange(6))
    ref = np.arange(12, dtype=np.float32).reshape(6, 2) + 1
    batch = batches.fill(pairs, rows, 32, reference=ref)
    for r, row in enumerate(rows):
        for k, i in enumerate(row):
            prompt, chosen, rejected = pairs.parts(int(i))
            for side, completion in enumerate((chosen, rejected)):
                seg = batch["segment_ids"][r] == 2 * k + 1 + side
                scored = seg & (batch["loss_mask"][r] > 0)
                assert scored.sum() == len(completion)  # a 1-token completion: one position
                np.testing.assert_array_equal(batch["targets"][r][scored], completion)
                np.testing.assert_array_equal(batch["positions"][r][seg],
                                              np.arange(len(prompt) + len(completion) - 1))
                assert batch["ref_logps"][r][seg].sum() == ref[i, side]
        assert (batch["loss_mask"][r][batch["segment_ids"][r] == 0] == 0).all()
    weight = DPO().weight({k: jnp.asarray(v) for k, v in batch.items()})
    assert float(weight) == 6


def test_real_train_steps_move_single_token_probabilities(frozen_program, scorer, tmp_path):
    """Frozen reference (no cache): step 1 reports ln 2 and zero rewards; a few steps raise
    log p(chosen token) and lower log p(rejected token) for every single-token pair."""
    prog = frozen_program
    pairs = batches.load_pairs(write_pairs(tmp_path / "p.jsonl", synthetic_pairs(8, seed=3)),
                                 vocab_size=VOCAB, seq_len=32)
    state = prog.init()
    before = scorer.logps(state.params, pairs)
    it = batches.PairIterator(pairs, seq_len=32, global_batch=4, max_pairs_per_row=16)
    history = []
    for _ in range(4):
        state, metrics = prog.step(state, prog.put_batch(next(it)))
        history.append(jax.device_get(metrics))
    first = history[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["rewards/margins"] == 0 and first["rewards/accuracies"] == 0
    in_batch = np.concatenate(it.rows(0))  # epoch 0's rows, then epoch 1's (reshuffled)
    assert first["loss_tokens"] == len(in_batch) > 8  # the weight: pairs in the batch
    np.testing.assert_allclose(first["logps/chosen"], before[in_batch, 0].mean(), rtol=1e-5)
    np.testing.assert_allclose(first["logps/rejected"], before[in_batch, 1].mean(), rtol=1e-5)
    after = scorer.logps(state.params, pairs)
    assert (after[:, 0] > before[:, 0]).all(), (before[:, 0], after[:, 0])
    assert (after[:, 1] < before[:, 1]).all(), (before[:, 1], after[:, 1])
    assert history[-1]["rewards/accuracies"] == 1.0 and history[-1]["loss"] < math.log(2)
    assert set(history[-1]) >= {"rewards/chosen", "rewards/rejected", "rewards/margins",
                                "logps/chosen", "logps/rejected", "loss"}


def test_frozen_reference_is_sharded_like_the_policy():
    frozen, cached = small_config(reference_cache=False), small_config()
    for config in (frozen, cached):
        config.train.global_batch = 8
    prog = loop.build(frozen)  # 8 devices: FSDP over 8
    assert prog.state_shardings.frozen["reference"] == prog.state_shardings.params
    assert prog.batch_shapes["loss_mask"].dtype == np.float32
    cached = loop.build(cached)
    assert cached.state_shardings.frozen == {}
    assert cached.batch_shapes["ref_logps"].dtype == np.float32
    assert cached.batch_shapes["tokens"].dtype == np.int32


@pytest.mark.slow
def test_sharded_run_equals_one_device(tmp_path):
    """Frozen reference on FSDP x 8 (policy and reference sharded alike): the same losses."""
    path = write_pairs(tmp_path / "p.jsonl", synthetic_pairs(16, completion_lengths=(1, 5)))
    losses = {}
    for n in (1, 8):
        config = small_config(pairs=path, reference_cache=False)
        config.train.update(global_batch=8, steps=3)
        loop.run(config, str(tmp_path / f"run{n}"), devices=jax.devices()[:n])
        with open(tmp_path / f"run{n}" / "metrics.jsonl") as f:
            losses[n] = [json.loads(line)["loss"] for line in f]
    assert losses[1][0] == pytest.approx(math.log(2), abs=1e-6)
    np.testing.assert_allclose(losses[8], losses[1], rtol=2e-6)
