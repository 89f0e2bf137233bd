"""Real offline PTS run: SmolLM2-135M-Instruct on simple arithmetic, through the CLI.

The reply is forced to start "a op b =" so rollouts are the answer digits (<= 6 tokens, stop at
newline): 2 questions, N = 16, p_gap = 0.2, one solution each. ~1.5-3 minutes on 2 cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

ARGS = ["--arithmetic", "40+32,4*15", "--n-samples", "16", "--p-gap", "0.2",
        "--max-new-tokens", "6", "--stop-newline", "--solutions", "1",
        "--batch-questions", "2", "--batch-rows", "32", "--seed", "0"]


@pytest.mark.slow
@pytest.mark.hf
def test_smollm2_arithmetic_pts_end_to_end(tmp_path, capsys):
    pytest.importorskip("gguf")
    from phi4_jax import cli
    from phi4_jax.convert.gguf import GGUFTokenizer, smollm2_path
    from phi4_jax.posttrain.pts.workflow import results
    from phi4_jax.posttrain.pts_cli import arithmetic_questions, build_problems, main
    from phi4_jax.posttrain.records import read_pairs, read_records
    from phi4_jax.posttrain.sampler import ModelSampler

    summary = main(["--out", str(tmp_path), *ARGS])
    printed = capsys.readouterr().out
    assert "false-pivot probability with N=16, p_gap=0.2" in printed and "p=0.5: 0.2153" in printed
    assert summary.questions == 2 and summary.searched >= 1 and summary.pivots >= 1
    assert summary.pairs >= 1

    tokenizer = GGUFTokenizer(smollm2_path())
    problems = build_problems(arithmetic_questions("40+32,4*15"),
                              ModelSampler(None, tokenizer), "You are a calculator.")
    prompts = {p.question.id: p.prompt_ids for p in problems}
    pivots, report = read_records(tmp_path / "pivots.jsonl", "pivot",
                                  vocab_size=tokenizer.vocab_size)
    assert report.bad_total == 0 and len(pivots) == summary.pivots
    for pivot in pivots:
        prompt = prompts[pivot.question_id]
        assert pivot.prefix_ids[:len(prompt)] == prompt
        assert pivot.position == len(pivot.prefix_ids) - len(prompt)
        assert abs(pivot.p_after - pivot.p_before) >= 0.2 - 1e-9 and pivot.n_samples == 16
        assert pivot.tokenizer == "SmolLM2-135M-Instruct.Q4_1.gguf"
    pairs, report = read_pairs(tmp_path / "pairs.jsonl", vocab_size=tokenizer.vocab_size)
    assert report.bad_total == 0 and len(pairs) == summary.pairs
    by_id = {p.id: p for p in pivots}
    for pair in pairs:
        pivot = by_id[pair.meta["pivot_id"]]
        assert pair.prompt_ids == pivot.prefix_ids
        assert len(pair.chosen_ids) == len(pair.rejected_ids) == 1
        assert pivot.token_id in pair.chosen_ids + pair.rejected_ids
        raises = pivot.p_after > pivot.p_before
        assert (pair.chosen_ids[0] == pivot.token_id) == raises
        alt_p = pair.meta["alt_p"]
        assert (alt_p < pivot.p_before) if raises else (alt_p > pivot.p_before)
    state = list(results(str(tmp_path)))  # the search stage's per-question records
    assert [s["id"] for s in state] == ["arith/40+32", "arith/4*15"]
    assert sum(s["oracle_calls"] for s in state) == summary.oracle_calls
    assert "stage search: 2 records kept, 0 rejected" in printed
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stages"]["search"]["records"] == 2
    assert json.loads((tmp_path / "config.json").read_text())["sampler"]["max_new_tokens"] == 6
    # a finished rerun searches nothing and rewrites the same bytes
    before = {n: (tmp_path / n).read_bytes() for n in ("pivots.jsonl", "pairs.jsonl")}
    again = main(["--out", str(tmp_path), *ARGS])
    assert (again.skipped, again.searched, again.oracle_calls) == (2, 0, 0)
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    with pytest.raises(cli.UsageError, match="differs from the one"):  # before loading
        main(["--out", str(tmp_path), *ARGS, "--temperature", "0.7"])
    print(f"\nSmolLM2 PTS: {summary}")
    for p in pivots:
        reply = tokenizer.decode(list(p.prefix_ids[p.meta["reply_start"]:]))
        print(f"  {p.id}: {reply!r} + {tokenizer.decode([p.token_id])!r}: "
              f"{p.p_before:.3f} -> {p.p_after:.3f}")
    assert np.isfinite([p.meta["logprob"] for p in pivots]).all()
