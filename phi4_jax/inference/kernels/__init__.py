"""CPU kernels compiled on first use: the decode step's few-row weight products.

Why. A decode step multiplies a handful of rows (the batch) by every weight matrix of the model.
On CPU, XLA hands `[M, K] @ [K, N]` to a general GEMM that repacks the weight on every call;
from two rows on it reads the weights at about half the memory bandwidth that streaming them once
reaches, and the step is bandwidth-bound. Measured on the 2-core CI host, SmolLM2-135M's 30 layers
of block weights (425 MB, float32), one step, ms (GB/s of weight read):

| rows | XLA dot | `small_matmul` |
|---|---|---|
| 1 | 16.7 (25.4) | 14.5 (29.3) |
| 8 | 33.5 (12.7) | 18.3 (23.2) |
| 16 | 41.3 (10.3) | 24.4 (17.4) |

and the 576 x 49152 output projection at 8 rows: 6.5 ms (XLA) vs 2.5 ms.

`small_matmul.cc` reads weights packed once into column panels (`pack_panels`: [P, K, 32], each
panel a contiguous stream, float32 or bfloat16) and applies each panel to up to 8 rows held in
registers, prefetching 32 panel rows ahead; the panels are shared out to XLA's intra-op thread
pool. bfloat16 panels are widened in registers and every product accumulates in float32. It is
an XLA FFI custom call, so it runs inside the compiled decode loop like any other op.

Building. The source ships with the package and is compiled with the system C++ compiler
(`$CXX`, else `c++` / `g++`; `-O3 -march=native`) into `$PHI4_JAX_KERNEL_CACHE` (default
`~/.cache/phi4_jax/kernels`), keyed by the source, the flags, the jax version and this CPU's
feature flags, so a cache shared between machines never loads a library built for another CPU.
Without a compiler, or with `PHI4_JAX_CPU_KERNELS=0`, `available()` is False and callers keep the
XLA dot (one warning says why). Only the CPU backend has the kernel; accelerators never use it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading

import jax
import jax.numpy as jnp

log = logging.getLogger(__name__)

PANEL = 32  # columns per weight panel (kPanel in small_matmul.cc)
TARGET = "phi4_small_matmul"  # float32 panels
TARGET_BF16 = "phi4_small_matmul_bf16"  # bfloat16 panels (half the bytes to stream)
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "small_matmul.cc")
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cache_dir() -> str:
    return os.environ.get("PHI4_JAX_KERNEL_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "phi4_jax", "kernels")


def build(compiler: str | None = None) -> str:
    """Compiles small_matmul.cc (if not cached) and returns the shared library's path.

    Raises RuntimeError with the compiler's output when it fails.
    """
    compiler = compiler or _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found ($CXX, c++, g++, clang++)")
    with open(_SOURCE, "rb") as f:
        source = f.read()
    key = hashlib.sha256(b"\0".join([source, " ".join(_FLAGS).encode(), compiler.encode(),
                                     jax.__version__.encode(), _cpu_flags().encode()]))
    path = os.path.join(cache_dir(), f"small_matmul-{key.hexdigest()[:16]}.so")
    if os.path.exists(path):
        return path
    os.makedirs(cache_dir(), exist_ok=True)
    # Build under a temporary name and rename: concurrent builds never see a partial file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache_dir())
    os.close(fd)
    cmd = [compiler, *_FLAGS, f"-I{jax.ffi.include_dir()}", _SOURCE, "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"compiling {_SOURCE} failed ({' '.join(cmd)}):\n"
                               f"{done.stderr.strip()[-2000:]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


_LOCK = threading.Lock()


@functools.cache
def available() -> bool:
    """Whether `small_matmul` can run here: CPU backend, kernels enabled, library built."""
    with _LOCK:  # one build and one registration per process, whichever thread asks first
        return _load()


def _load() -> bool:
    if os.environ.get("PHI4_JAX_CPU_KERNELS", "1").lower() in ("0", "false", "no", "off"):
        return False
    if jax.default_backend() != "cpu":
        return False
    try:
        lib = ctypes.cdll.LoadLibrary(build())
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.Phi4SmallMatmul),
                                    platform="cpu")
        jax.ffi.register_ffi_target(TARGET_BF16, jax.ffi.pycapsule(lib.Phi4SmallMatmulBf16),
                                    platform="cpu")
    except (RuntimeError, OSError, subprocess.SubprocessError, AttributeError) as e:
        log.warning("phi4_jax CPU decode kernel unavailable, using XLA's dot instead: %s", e)
        return False
    return True


def pack_panels(w: jax.Array, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """[K, N] -> [ceil(N / 32), K, 32] column panels in `dtype` (float32 or bfloat16; zero
    columns past N)."""
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        raise ValueError(f"small_matmul panels are float32 or bfloat16, not {dtype}")
    k, n = w.shape
    p = -(-n // PANEL)
    w = jnp.pad(w.astype(dtype), ((0, 0), (0, p * PANEL - n)))
    return w.reshape(k, p, PANEL).transpose(1, 0, 2)


def small_matmul(x: jax.Array, panels: jax.Array, n: int) -> jax.Array:
    """x [..., K] @ w [K, n] for w packed by `pack_panels`; float32 out [..., n].

    x is used in float32; bfloat16 panels are widened in registers and every product is
    accumulated in float32. Needs `available()`. Meant for few rows (the kernel keeps 8 rows in
    registers per pass over a panel; more rows re-read panels from cache).
    """
    lead, k = x.shape[:-1], x.shape[-1]
    if panels.ndim != 3 or panels.shape[1] != k or panels.shape[2] != PANEL:
        raise ValueError(f"small_matmul: x [..., {k}] needs panels [P, {k}, {PANEL}], got "
                         f"{panels.shape}")
    rows = 1
    for d in lead:
        rows *= d
    target = TARGET_BF16 if panels.dtype == jnp.bfloat16 else TARGET
    out = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((rows, panels.shape[0] * PANEL),
                                                        jnp.float32))(
        x.reshape(rows, k).astype(jnp.float32), panels)
    if out.shape[1] != n:
        out = out[:, :n]
    return out.reshape(*lead, n)
