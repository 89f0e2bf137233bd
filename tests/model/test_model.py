"""Model structure: parameter counts, logical axes, causality by gradient, remat/scan, dtypes."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from phi4_jax.model import count_params, init_model, preset, presets
from phi4_jax.sharding import axes as ax

CFG = preset("tiny", vocab_size=64, dtype="float32", num_layers=3)


@pytest.fixture(scope="module")
def model():
    return init_model(CFG, seed=0)


def test_phi4_14b_parameter_count_is_exact():
    assert count_params("phi4_14b") == 14_659_507_200


def test_preset_counts_follow_the_closed_form():
    for name, c in presets.items():
        d, f, v, n, k, h, n_layers = (c.embed_dim, c.mlp_dim, c.vocab_size, c.num_heads,
                                      c.num_kv_heads, c.head_dim, c.num_layers)
        per_layer = d * (n + 2 * k) * h + n * h * d + 3 * d * f + 2 * d
        embeddings = v * d * (1 if c.tie_embeddings else 2)
        assert count_params(c) == n_layers * per_layer + embeddings + d, name
    assert 7.0e9 < count_params("ablation_7b") < 8.0e9
    assert 0.08e9 < count_params("small") < 0.15e9


def test_every_parameter_has_logical_axes_from_the_vocabulary(model):
    specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    for path, spec in nnx.to_flat_state(specs):
        value = spec.get_value()
        names = tuple(value)
        leaf = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))[path]
        assert len(names) == leaf.get_value().ndim, path
        assert all(n in ax.VOCABULARY for n in names), (path, names)
        if path[0] == "blocks":
            assert names[0] == ax.LAYERS, path


def test_model_code_never_names_a_mesh_axis():
    root = pathlib.Path(__file__).parents[2] / "phi4_jax" / "model"
    for file in root.glob("*.py"):
        text = file.read_text()
        for mesh_axis in ("data", "fsdp", "tensor"):
            assert not re.search(rf"""["']{mesh_axis}["']""", text), (file.name, mesh_axis)


@pytest.fixture(scope="module")
def row_grads(model):
    """g(segments)[i, v] = |d logits[0, i] / d embedding row v| (untied head), one compile."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def grads(tokens, segments):
        def f(state, i):
            return nnx.merge(graphdef, state)(tokens, segment_ids=segments)[0, i].sum()

        per_position = jax.vmap(lambda i: jax.grad(f)(state, i))(jnp.arange(tokens.shape[1]))
        return jnp.abs(per_position["embed"]["embedding"].get_value()).sum(-1)

    return lambda tokens, segments: np.asarray(grads(tokens, segments))


def test_causality_by_gradient(row_grads):
    tokens = jnp.arange(1, 11)[None]  # distinct tokens: one embedding row per position
    g = row_grads(tokens, jnp.ones_like(tokens))
    for i in range(10):
        assert (g[i, np.asarray(tokens[0, : i + 1])] > 0).all(), i
        assert (g[i, np.asarray(tokens[0, i + 1:])] == 0).all(), i


def test_packed_segments_do_not_see_each_other_by_gradient(row_grads):
    tokens = jnp.arange(1, 11)[None]
    g = row_grads(tokens, jnp.array([[1] * 4 + [2] * 6]))
    for i in range(4, 10):  # document 2 never sees document 1
        assert (g[i, np.asarray(tokens[0, :4])] == 0).all()
        assert (g[i, np.asarray(tokens[0, 4: i + 1])] > 0).all()


@pytest.fixture(scope="module")
def loss_and_grad(model):
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, CFG.vocab_size)
    graphdef, state = nnx.split(model)

    def loss(state, config):
        m = nnx.merge(graphdef, state)
        m.config = config  # same parameters, different execution policy
        return jnp.mean(m(tokens) ** 2)

    fn = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    return lambda config: fn(state, config)


@pytest.mark.parametrize("remat,scan", [("full", True), ("full", False), ("dots", True),
                                        ("dots_no_batch", True), ("save_attn_out", True)])
def test_remat_and_unscanned_layers_give_identical_values_and_grads(loss_and_grad, remat, scan):
    ref_val, ref_grad = loss_and_grad(CFG)
    for cfg in (CFG.replace(remat=remat, scan_layers=scan),):
        val, grad = loss_and_grad(cfg)
        np.testing.assert_allclose(val, ref_val, rtol=1e-6)
        for (p, a), (_, b) in zip(nnx.to_flat_state(grad), nnx.to_flat_state(ref_grad)):
            np.testing.assert_allclose(a.get_value(), b.get_value(), atol=1e-7, err_msg=str(p))


def test_default_dtype_policy_is_fp32_params_bf16_compute():
    cfg = preset("tiny", vocab_size=64, num_layers=1)
    m = init_model(cfg)
    assert all(p.get_value().dtype == jnp.float32
               for _, p in nnx.to_flat_state(nnx.state(m, nnx.Param)))
    tokens = jnp.zeros((1, 4), jnp.int32)
    assert m.hidden(tokens).dtype == jnp.bfloat16
    assert m(tokens).dtype == jnp.float32


def test_bad_configs_name_the_field():
    with pytest.raises(ValueError, match="num_heads=6 is not divisible by.*num_kv_heads=4"):
        preset("tiny", num_heads=6, num_kv_heads=4)
    with pytest.raises(ValueError, match="remat='everything'"):
        preset("tiny", remat="everything")
    with pytest.raises(KeyError, match="unknown model preset 'huge'"):
        preset("huge")
