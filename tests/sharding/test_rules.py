"""Rules tables: logical -> mesh axes, Flax-style reuse semantics, validation messages."""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from phi4_jax.model import preset
from phi4_jax.sharding import axes as ax
from phi4_jax.sharding import make_mesh, rules
from phi4_jax.train.state import model_graph


@pytest.fixture(scope="module")
def mesh222():
    return make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


def test_fsdp_tp_specs(mesh222):
    r = rules.Rules(mesh222, rules.build_table("fsdp_tp"), "fsdp_tp")
    assert r.spec(("layers", "embed", "heads", "head_dim")) == P(None, "fsdp", "tensor", None)
    assert r.spec(("embed", "vocab")) == P("fsdp", "tensor")
    # Activations: batch takes data and fsdp, so embed (-> fsdp) is replicated.
    assert r.spec(("batch", "seq", "embed")) == P(("data", "fsdp"), None, None)
    assert r.spec(("batch", "seq", "mlp")) == P(("data", "fsdp"), None, "tensor")


def test_dimension_keeps_its_free_axes(mesh222):
    table = rules.build_table("fsdp", {"embed": "fsdp,tensor"})
    r = rules.Rules(mesh222, table, "fsdp")
    assert r.spec(("embed", "mlp")) == P(("fsdp", "tensor"), None)
    assert r.spec(("batch", "embed")) == P(("data", "fsdp"), "tensor")


def test_overrides_parse_and_reject_unknown_names():
    assert rules.build_table("fsdp_tp", {"kv_heads": ""})["kv_heads"] == ()
    assert rules.build_table("fsdp", {"seq": "tensor", "mlp": None})["seq"] == ("tensor",)
    assert "mlp" not in rules.build_table("fsdp", {"mlp": None})
    with pytest.raises(ValueError, match="mesh.rule_overrides.experts"):
        rules.build_table("fsdp", {"experts": "tensor"})
    with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
        rules.build_table("fsdp", {"mlp": "model"})
    with pytest.raises(ValueError, match="mesh.rules='megatron'"):
        rules.build_table("megatron")


def test_phi4_kv_heads_rejected_under_tensor_4_unless_replicated():
    mesh = make_mesh({"fsdp": 2, "tensor": 4})
    _, params, specs = model_graph(preset("phi4_14b"))  # eval_shape only: no allocation
    r = rules.Rules(mesh, rules.build_table("fsdp_tp"), "fsdp_tp")
    with pytest.raises(ValueError) as err:
        r.validate(params, specs)
    message = str(err.value)
    assert "blocks/attn/k dimension 2 ('kv_heads', size 10)" in message
    assert "('tensor',)" in message and "tensor=4" in message
    assert "rule_overrides.kv_heads=''" in message
    fixed = rules.Rules(mesh, rules.build_table("fsdp_tp", {"kv_heads": ""}), "fsdp_tp")
    fixed.validate(params, specs)  # 40 heads, 17920 mlp, 100352 vocab all divide by 4


def test_activate_installs_the_partitioner(mesh222):
    r = rules.Rules(mesh222, rules.build_table("fsdp"), "fsdp")
    assert ax.active() is None
    with rules.activate(r):
        assert ax.active() is r

        @jax.jit
        def f(x):
            return ax.constrain(x * 2, ("batch", "embed"))

        out = f(jax.numpy.ones((8, 4)))
    assert ax.active() is None
    assert out.sharding.is_equivalent_to(r.sharding(("batch", "embed")), 2)
