"""Every code cell of the notebooks runs, in order, in a fresh interpreter (no Jupyter needed)."""

import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
# What each notebook must print (a notebook added without an entry fails the test).
EXPECT = {
    "ablations_colab.ipynb": ["--exp=ablation_7b_1t:mixture=synthetic_only", "global batch 5760",
                              "42,385 steps", "4 scratch"],
}


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, tmp_path):
    with open(path, encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    source = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    script = tmp_path / "notebook.py"
    script.write_text(source)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    for expected in EXPECT[os.path.basename(path)]:
        assert expected in proc.stdout, (expected, proc.stdout[-3000:])
