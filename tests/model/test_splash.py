"""Splash attention: numerics (Pallas interpreter on CPU) and lowering for a real TPU target."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from phi4_jax.model.attention import make_mask, xla_attention
from phi4_jax.model.splash import splash_attention
from phi4_jax.sharding import axes as ax

B, T, N, K, H = 2, 128, 4, 2, 64


def _inputs(dtype=jnp.float32):
    r = np.random.default_rng(0)
    q = jnp.asarray(r.normal(size=(B, T, N, H)), dtype)
    k = jnp.asarray(r.normal(size=(B, T, K, H)), dtype)
    v = jnp.asarray(r.normal(size=(B, T, K, H)), dtype)
    seg = jnp.asarray([[1] * 50 + [2] * 70 + [0] * 8, [1] * 128], jnp.int32)
    return q, k, v, seg


def test_interpreted_kernel_matches_reference_forward_and_backward():
    q, k, v, seg = _inputs()
    idx = jnp.broadcast_to(jnp.arange(T), (B, T))
    mask = make_mask(idx, idx, seg, seg)

    def loss(fn):
        return lambda q, k, v: (fn(q, k, v) ** 2).sum()

    splash = lambda q, k, v: splash_attention(q, k, v, seg, interpret=True)
    ref = lambda q, k, v: xla_attention(q, k, v, mask)
    np.testing.assert_allclose(splash(q, k, v), ref(q, k, v), atol=1e-5)
    g_splash = jax.jit(jax.grad(loss(splash), argnums=(0, 1, 2)))(q, k, v)
    g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(g_splash, g_ref):
        np.testing.assert_allclose(a, b, atol=1e-4)


class _Rules:
    """A minimal Partitioner: batch over 'fsdp', heads over 'tensor', kv heads replicated."""

    def __init__(self, mesh):
        self.mesh = mesh

    def spec(self, axes):
        table = {ax.BATCH: "fsdp", ax.HEADS: "tensor"}
        return P(*[table.get(a) for a in axes])

    def constrain(self, x, axes):
        return x


@pytest.mark.tpu_compile
def test_lowers_and_compiles_for_tpu_with_heads_sharded_and_kv_heads_replicated():
    from jax.experimental import topologies

    topo = topologies.get_topology_desc(platform="tpu", topology_name="v5p:2x2x1",
                                        chip_config_name="default", chips_per_host_bounds=(2, 2, 1),
                                        num_slices=1)
    mesh = Mesh(np.array(topo.devices).reshape(2, 2), ("fsdp", "tensor"))
    # 6 query heads over tensor=2 -> 3 per shard; group size 3 over 2 KV heads.
    shape = {"q": (4, 512, 6, 128), "kv": (4, 512, 2, 128)}
    q = jax.ShapeDtypeStruct(shape["q"], jnp.bfloat16,
                             sharding=NamedSharding(mesh, P("fsdp", None, "tensor")))
    kv = jax.ShapeDtypeStruct(shape["kv"], jnp.bfloat16, sharding=NamedSharding(mesh, P("fsdp")))
    seg = jax.ShapeDtypeStruct((4, 512), jnp.int32, sharding=NamedSharding(mesh, P("fsdp")))

    def loss(q, k, v, s):
        return splash_attention(q, k, v, s).astype(jnp.float32).sum()

    # conftest asks for "highest" matmul precision (CPU numerics); TPU lowering uses the default.
    with ax.use_partitioner(_Rules(mesh)), jax.default_matmul_precision("default"):
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, kv, kv, seg).compile()
    assert "tpu_custom_call" in compiled.as_text()  # the Pallas kernel, not an XLA fallback
    assert compiled.memory_analysis().temp_size_in_bytes > 0


def test_sharded_kv_head_selection_matches_reference_on_cpu_mesh():
    """Heads split over 'tensor' with KV heads replicated: each shard picks its KV heads."""
    devices = np.array(jax.devices()[:4]).reshape(2, 2)
    mesh = Mesh(devices, ("fsdp", "tensor"))
    r = np.random.default_rng(1)
    q = jnp.asarray(r.normal(size=(2, 128, 6, 32)), jnp.float32)
    k = jnp.asarray(r.normal(size=(2, 128, 2, 32)), jnp.float32)
    v = jnp.asarray(r.normal(size=(2, 128, 2, 32)), jnp.float32)
    seg = jnp.ones((2, 128), jnp.int32)
    idx = jnp.broadcast_to(jnp.arange(128), (2, 128))
    ref = xla_attention(q, k, v, make_mask(idx, idx, seg, seg))
    with ax.use_partitioner(_Rules(mesh)):
        out = jax.jit(lambda q, k, v, s: splash_attention(q, k, v, s, interpret=True))(
            q, k, v, seg)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_blocked_xla_attention_matches_full_for_long_sequences():
    """Sequences over 2 query blocks run blocked: same values and gradients as one pass."""
    from phi4_jax.model.attention import blocked_xla_attention

    r = np.random.default_rng(2)
    t = 512
    q = jnp.asarray(r.normal(size=(1, t, 4, 16)), jnp.float32)
    k = jnp.asarray(r.normal(size=(1, t, 2, 16)), jnp.float32)
    v = jnp.asarray(r.normal(size=(1, t, 2, 16)), jnp.float32)
    seg = jnp.asarray([[1] * 300 + [2] * 200 + [0] * 12], jnp.int32)
    idx = jnp.broadcast_to(jnp.arange(t), (1, t))
    full = lambda q, k, v: xla_attention(q, k, v, make_mask(idx, idx, seg, seg))
    blocked = lambda q, k, v: blocked_xla_attention(q, k, v, seg, block=128)
    np.testing.assert_allclose(blocked(q, k, v), full(q, k, v), atol=1e-5)
    loss = lambda f: lambda q, k, v: (f(q, k, v) ** 2).sum()
    for a, b in zip(jax.grad(loss(blocked), (0, 1, 2))(q, k, v),
                    jax.grad(loss(full), (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(a, b, atol=1e-4)
