"""Model FLOPs: the matmul parameter count and the per-token formula, checked independently."""

import pytest

from phi4_jax.model import count_params, preset
from phi4_jax.train import flops


@pytest.mark.parametrize("name", ["tiny", "small", "phi4_14b"])
def test_matmul_params_are_all_params_but_embedding_and_norms(name):
    config = preset(name)
    norms = (2 * config.num_layers + 1) * config.embed_dim
    embedding = config.vocab_size * config.embed_dim
    assert flops.matmul_params(config) == count_params(config) - embedding - norms


def test_phi4_flops_per_token_at_4k():
    config = preset("phi4_14b")
    matmul = 14_659_507_200 - 100352 * 5120 - 81 * 5120
    attention = 6 * 40 * 40 * 128 * 4096  # causal: 6 * L * N * H * T
    assert flops.flops_per_token(config, 4096) == 6 * matmul + attention
    # 6 x 14.66e9 (the recipe's anchor), less the embedding lookup, plus causal attention.
    assert flops.flops_per_token(config, 4096) / (6 * 14.66e9) == pytest.approx(1.02, abs=0.01)


def test_peak_table_matches_device_kinds():
    class Device:
        def __init__(self, kind):
            self.device_kind = kind

    assert flops.device_peak_flops(Device("TPU v5 lite")) == 197e12
    assert flops.device_peak_flops(Device("TPU v5")) == 459e12
    assert flops.device_peak_flops(Device("NVIDIA H100 80GB HBM3")) == 989e12
    assert flops.device_peak_flops(Device("cpu")) is None
