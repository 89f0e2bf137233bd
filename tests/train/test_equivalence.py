"""Three steps give the same losses on 1 device and on 8 simulated devices in three layouts.

Tolerance: float32 compute with `highest` matmul precision (tests/conftest.py); the layouts
differ only in reduction order, so losses agree to rtol 2e-6. Parameters agree to atol 1e-4:
Adam divides by sqrt(v), which turns reduction-order noise in near-zero gradients into
updates of up to the learning rate (3e-3 here) for those few elements.

Every layout starts from the same initial state (initialized once, then resharded), so each
layout compiles only its train step.
"""

import jax
import numpy as np
import pytest

from phi4_jax.train import inputs, loop
from tests.train.conftest import tiny_config

LAYOUTS = {
    "one_device": ({"data": 1, "fsdp": 1, "tensor": 1}, "fsdp", 1),
    "data8": ({"data": 8, "fsdp": 1, "tensor": 1}, "fsdp", 8),
    "fsdp8": ({"data": 1, "fsdp": 8, "tensor": 1}, "fsdp", 8),
    "data2_fsdp2_tensor2": ({"data": 2, "fsdp": 2, "tensor": 2}, "fsdp_tp", 8),
}


def three_steps(ici, rules, num_devices, initial=None):
    config = tiny_config()
    config.mesh.ici.update(ici)
    config.mesh.rules = rules
    prog = loop.build(config, devices=jax.devices()[:num_devices])
    data = inputs.SyntheticIterator(batch_size=8, seq_len=32, vocab_size=256)
    state = prog.init() if initial is None else jax.device_put(initial, prog.state_shardings)
    initial, losses = jax.device_get(state), []
    for _ in range(3):
        state, metrics = prog.step(state, prog.put_batch(next(data)))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params), initial


@pytest.fixture(scope="module")
def reference():
    return three_steps(*LAYOUTS["one_device"])


@pytest.mark.parametrize("layout", [k for k in LAYOUTS if k != "one_device"])
def test_same_losses_as_one_device(reference, layout):
    ref_losses, ref_params, initial = reference
    losses, params, _ = three_steps(*LAYOUTS[layout], initial=initial)
    assert ref_losses[2] < ref_losses[0]  # the steps do train
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), params, ref_params)
