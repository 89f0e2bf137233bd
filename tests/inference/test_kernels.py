"""`inference.kernels.small_matmul` (the CPU decode kernel) against numpy, and its build."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phi4_jax.inference import kernels


def test_the_kernel_builds_here():
    assert kernels.available()
    assert os.path.exists(kernels.build())  # cached: the same path again, no rebuild


@pytest.fixture(scope="module")
def matmul():
    return jax.jit(kernels.small_matmul, static_argnums=2)


# rows 1..8 use one register block each, 9..20 two or three; K and N off every tile size.
@pytest.mark.parametrize("m,k,n", [(1, 576, 960), (3, 5, 7), (8, 64, 32), (9, 33, 100),
                                   (20, 130, 65), (2, 1, 1)])
def test_small_matmul_matches_numpy(matmul, m, k, n):
    rng = np.random.default_rng(m * 1000 + k + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    panels = kernels.pack_panels(jnp.asarray(w))
    assert panels.shape == (-(-n // kernels.PANEL), k, kernels.PANEL)
    out = np.asarray(matmul(jnp.asarray(x), panels, n))
    expect = x.astype(np.float64) @ w.astype(np.float64)
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-5 * np.sqrt(k))


@pytest.mark.parametrize("m,k,n", [(1, 576, 960), (5, 33, 100), (11, 64, 64)])
def test_bfloat16_panels_widen_exactly_and_accumulate_in_float32(matmul, m, k, n):
    rng = np.random.default_rng(m + k + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = jnp.asarray(rng.standard_normal((k, n)), jnp.bfloat16)
    panels = kernels.pack_panels(w, jnp.bfloat16)
    assert panels.dtype == jnp.bfloat16
    out = np.asarray(matmul(jnp.asarray(x), panels, n))
    # The same products in float64 from the bfloat16 values: only summation order differs.
    expect = x.astype(np.float64) @ np.asarray(w.astype(jnp.float32)).astype(np.float64)
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-5 * np.sqrt(k))
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        kernels.pack_panels(w, jnp.float16)


def test_small_matmul_keeps_leading_axes_and_checks_shapes(matmul):
    x = jnp.ones((2, 1, 40), jnp.float32)
    panels = kernels.pack_panels(jnp.ones((40, 50), jnp.float32))
    out = matmul(x, panels, 50)
    assert out.shape == (2, 1, 50)
    np.testing.assert_allclose(out, 40.0)
    with pytest.raises(ValueError, match=r"panels \[P, 41, 32\]"):
        kernels.small_matmul(jnp.ones((2, 41)), panels, 50)


def test_inside_a_compiled_loop():
    # The decode step calls the kernel inside a while loop: each iteration reads its input.
    w = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32) / 4
    panels = kernels.pack_panels(jnp.asarray(w))

    @jax.jit
    def power(x):
        return jax.lax.fori_loop(0, 5, lambda i, y: kernels.small_matmul(y, panels, 16), x)

    x = np.ones((3, 16), np.float32)
    expect = x @ np.linalg.matrix_power(w.astype(np.float64), 5)
    np.testing.assert_allclose(power(jnp.asarray(x)), expect, rtol=1e-4, atol=1e-5)


def test_a_failing_compiler_is_reported_and_leaves_no_library(tmp_path, monkeypatch):
    monkeypatch.setenv("PHI4_JAX_KERNEL_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="small_matmul.cc failed"):
        kernels.build(compiler="/bin/false")
    assert list(tmp_path.iterdir()) == []


def test_disabled_or_unbuildable_means_xla_fallback_with_one_warning(tmp_path, monkeypatch,
                                                                     caplog):
    monkeypatch.setenv("PHI4_JAX_CPU_KERNELS", "0")
    kernels.available.cache_clear()
    try:
        assert not kernels.available()
        monkeypatch.delenv("PHI4_JAX_CPU_KERNELS")
        monkeypatch.setenv("PHI4_JAX_KERNEL_CACHE", str(tmp_path))
        monkeypatch.setenv("CXX", "/bin/false")
        monkeypatch.setattr(kernels.shutil, "which",
                            lambda name: name if name == "/bin/false" else None)
        kernels.available.cache_clear()
        with caplog.at_level(logging.WARNING, logger="phi4_jax.inference.kernels"):
            assert not kernels.available()
        assert "using XLA's dot instead" in caplog.text
    finally:
        monkeypatch.undo()
        kernels.available.cache_clear()
    assert kernels.available()
