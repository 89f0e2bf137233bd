"""The learning-rate schedule and AdamW update against their formulas (numpy references)."""

import jax.numpy as jnp
import numpy as np
import pytest

from phi4_jax.train import optimizer

PEAK, WARMUP, END, RATIO = 3e-4, 10, 110, 0.1


def reference_lr(step):
    floor = PEAK * RATIO
    if step < WARMUP:
        return PEAK * step / WARMUP
    if step < END:
        return PEAK + (floor - PEAK) * (step - WARMUP) / (END - WARMUP)
    return floor


@pytest.mark.parametrize("step", [0, 5, WARMUP, 35, 60, END - 1, END, 10 * END])
def test_schedule_matches_formula(step):
    lr = optimizer.schedule(PEAK, WARMUP, END, RATIO)
    np.testing.assert_allclose(float(lr(step)), reference_lr(step), rtol=1e-6, atol=1e-12)


def test_named_points():
    lr = optimizer.schedule(PEAK, WARMUP, END, RATIO)
    assert float(lr(WARMUP)) == pytest.approx(PEAK)  # warm-up end: the peak
    assert float(lr((WARMUP + END) // 2)) == pytest.approx(PEAK * (1 + RATIO) / 2)  # mid-decay
    assert float(lr(END)) == pytest.approx(PEAK * RATIO)  # the end: the floor


def test_adamw_step_and_decay_exclusion_match_numpy():
    params = {"attn_norm": {"scale": jnp.full((4,), 2.0)}, "w": jnp.full((4, 3), 2.0)}
    rng = np.random.default_rng(0)
    grads = {"attn_norm": {"scale": jnp.asarray(rng.normal(size=4), jnp.float32)},
             "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)}
    b1, b2, eps, wd = 0.9, 0.95, 1e-8, 0.1
    lr = optimizer.schedule(PEAK, 0, END, RATIO)
    tx = optimizer.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd, exclude=("norm",),
                         clip_norm=None)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    for path, decayed in ((("attn_norm", "scale"), False), (("w",), True)):
        g = np.asarray(grads[path[0]][path[1]] if len(path) == 2 else grads[path[0]])
        p = 2.0
        m_hat = (1 - b1) * g / (1 - b1)
        v_hat = (1 - b2) * g**2 / (1 - b2)
        expected = -PEAK * (m_hat / (np.sqrt(v_hat) + eps) + (wd * p if decayed else 0.0))
        got = updates[path[0]][path[1]] if len(path) == 2 else updates[path[0]]
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
    assert float(optimizer.applied_learning_rate(state)) == pytest.approx(PEAK)
    _, state = tx.update(grads, state, params)
    # Second update: count 1 of a schedule without warm-up.
    expected = PEAK + (PEAK * RATIO - PEAK) * 1 / END
    assert float(optimizer.applied_learning_rate(state)) == pytest.approx(expected)

