"""Test setup: 8 simulated CPU devices before jax is imported; float32 numerics."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " --xla_force_host_platform_device_count=8").strip()
# libtpu (the [tpu] extra, used only for ahead-of-time compilation) must not grab the process.
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
