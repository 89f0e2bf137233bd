"""bench/aot.py as a test: the 14B steps compile for real TPU topologies (libtpu, no TPU) and
fit, pretraining at most MaxText's per-chip memory for the same shape."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("libtpu")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
@pytest.mark.tpu_compile
def test_phi4_steps_compile_and_fit(tmp_path):
    out = tmp_path / "aot.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "bench/aot.py", "--cases=pretrain,midtrain,plan",
                           f"--json={out}"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["case"]: r for r in json.loads(out.read_text())}
    pre = rows["pretrain"]
    assert (pre["tpu"], pre["seq_len"], pre["rows_per_device"]) == ("v5p-128", 4096, 1)
    assert pre["mesh"] == {"data": 1, "fsdp": 64, "tensor": 1}
    assert pre["peak_gib"] <= pre["maxtext_peak_gib"] == 8.11, pre
    mid = rows["midtrain"]
    assert (mid["tpu"], mid["seq_len"], mid["global_batch"]) == ("v5p-128", 16384, 1440)
    assert mid["fits"] and mid["peak_gib"] < mid["hbm_gib"]
    plan = rows["plan"]
    assert plan["global_batch"] == 5760 and plan["fits"]
    ways = plan["mesh"]["data"] * plan["mesh"]["fsdp"]
    assert plan["micro_batches"] * ways * plan["rows_per_device"] == 5760
    assert "per-chip peak:" in proc.stdout and "compile time:" in proc.stdout
    # The planner's memory estimate, which picks per-device batches, tracks the compiler.
    for row in rows.values():
        assert 0.85 <= row["estimate_gib"] / row["peak_gib"] <= 1.2, row
