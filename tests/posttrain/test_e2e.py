"""The offline post-training end to end (`python -m phi4_jax.posttrain.e2e`): SmolLM2-135M
served by phi4_jax.serve as policy, judge and teacher; judge, refusal and PTS pairs; the SFT and
both DPO smoke runs trained on them. Tiny sizes; several minutes on 2 cores."""

from __future__ import annotations

import json

import pytest

from phi4_jax.posttrain.records import read_pairs


@pytest.mark.slow
@pytest.mark.hf
def test_posttrain_end_to_end_on_smollm2(tmp_path):
    pytest.importorskip("gguf")
    from phi4_jax.posttrain.e2e import main

    assert main(["--workdir", str(tmp_path), "--prompts", "2", "--samples", "2",
                 "--max_tokens", "8", "--steps", "1"]) == 0
    counts = {}
    for job in ("judge", "refusal", "pts"):
        pairs, report = read_pairs(tmp_path / job / "pairs.jsonl")
        assert report.bad_total == 0
        counts[job] = len(pairs)
    assert counts["refusal"] > 0 and counts["pts"] > 0  # a 135M judge may give none
    judged = json.loads((tmp_path / "judge" / "report.json").read_text())["stats"]
    assert judged["prompts"] == 2 and judged["candidates"] == 4
    for job in ("judge", "refusal"):  # both jobs ran on the engine: manifest, cached replies
        assert (tmp_path / job / "workflow" / "manifest.json").exists()
    for run in ("phi4_sft", "phi4_dpo_pts", "phi4_dpo_judge"):
        assert any((tmp_path / run).rglob("*")), run
