"""The counting-task demo data, its command line, and the old `sft_data --demo` command."""

from __future__ import annotations

import subprocess
import sys

from phi4_jax.data import sft
from phi4_jax.data.store import TokenStore
from phi4_jax.posttrain import demo, sft_data
from phi4_jax.posttrain.records import read_pairs, read_records


def test_counting_and_demo_conversations_are_learnable_sft_records(tmp_path):
    assert demo.counting(8, 4) == "eight nine zero one"
    convs = demo.demo_conversations(50, seed=3)
    assert convs == demo.demo_conversations(50, seed=3) and len(convs) == 50
    path = demo.write_conversations(str(tmp_path), 50, seed=3)
    records, report = read_records(path, "sft")
    assert len(records) == 50 and report.bad_total == 0
    for r in records:
        for question, answer in zip(r.messages[-2::-2], r.messages[::-2]):
            start = next(i for i, w in enumerate(demo.NUMBER_WORDS)
                         if question["content"].endswith((f" {w}.", f" {w}, please.")))
            assert answer["content"] == demo.counting(start, len(answer["content"].split()))


def test_demo_cli_writes_pairs_and_an_sft_store(tmp_path, capsys):
    assert demo.main(["pairs", "--output", str(tmp_path / "pairs")]) == 0
    train, report = read_pairs(tmp_path / "pairs" / "train.jsonl")
    held_out, _ = read_pairs(tmp_path / "pairs" / "held_out.jsonl")
    assert report.bad_total == 0 and len(train) + len(held_out) == 3 * 10 * 4 * 2
    assert [p.id for p in train] == [p.id for p in demo.demo_pairs()[0]]
    assert demo.main(["sft", "--output", str(tmp_path / "sft"), "--num_conversations", "7"]) == 0
    assert TokenStore(str(tmp_path / "sft")).num_documents == 7
    assert "kept 7 (0 truncated), skipped 0" in capsys.readouterr().out


def test_old_sft_data_command_still_takes_demo(tmp_path, capsys):
    assert sft_data.main(["--demo", "5", "--output", str(tmp_path / "s"), "--max_tokens",
                          "64"]) == 0
    out = capsys.readouterr().out
    assert "kept 5 (0 truncated), skipped 0" in out and "5 conversations" in out
    assert sft_data.build_store is sft.build_store
    assert sft_data.demo_conversations is demo.demo_conversations
    help_text = subprocess.run([sys.executable, "-m", "phi4_jax.posttrain.sft_data", "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "--demo" in help_text and "--input" in help_text
