"""The post-training experiments: each parses and builds; a tiny SFT -> DPO(PTS) -> DPO chain.

The chain (slow, ~2 minutes on 2 shared cores) runs the real path end to end on CPU with the
tiny model and the real tokenizer: demo conversations -> `data.sft` store -> `phi4_sft:smoke`
(loss on assistant tokens) -> `phi4_dpo_pts:smoke` from the SFT checkpoint, its reference the
same checkpoint via the log-prob cache -> `phi4_dpo_judge:smoke` from the DPO-PTS checkpoint,
its reference that checkpoint. The pairs are PTS-shaped (a counting question plus the first
words of the reply; chosen: the next number word, rejected: another; `demo.demo_pairs`).
It shows that DPO raises the implicit-reward accuracy on held-out prompts (prompts never
trained on) from 0 (policy == reference: every reward is 0) to >= 0.9, and that each stage's
first step sees policy == reference (loss ln 2).
"""

import json
import math

import jax
import numpy as np
import pytest

import experiments
from phi4_jax.data import sft as sft_store
from phi4_jax.posttrain import demo
from phi4_jax.posttrain.records import JsonlWriter
from phi4_jax.train import checkpoint, loop, objectives
from phi4_jax.train.config import RunConfig
from phi4_jax.train.dpo import batches, reference

NAMES = ("phi4_sft", "phi4_dpo_pts", "phi4_dpo_judge")
ONE = jax.devices()[:1]


@pytest.mark.parametrize("name", NAMES)
def test_experiment_parses_and_builds(name):
    full = experiments.get_config(name)
    assert full.name == name and full.model.preset == "phi4_14b"
    objectives.from_config(RunConfig.from_experiment(full))
    smoke = experiments.get_config(f"{name}:smoke")
    assert smoke.model.preset == "tiny" and smoke.model.dtype == "float32"
    prog = loop.build(smoke)  # the 8 simulated CPU devices: FSDP over 8
    assert prog.objective.name == ("next_token" if name == "phi4_sft" else "dpo")
    assert loop.build(full, devices=ONE).model_config.num_layers == 40  # shapes only


def test_the_chain_and_the_paper_numbers():
    sft, pts, judge = (experiments.get_config(n) for n in NAMES)
    assert sft.optimizer.peak_lr == 1e-6 and sft.objective == "next_token"
    assert sft.data.mixture == "phi4_sft" and sft.train.init_from == "workdirs/phi4_midtrain"
    assert pts.train.init_from == "workdirs/phi4_sft" and not pts.train.reference_from
    assert judge.train.init_from == "workdirs/phi4_dpo_pts" and not judge.train.reference_from
    assert pts.objective == judge.objective == "dpo" and pts.data.source == "pairs"
    smoke = [experiments.get_config(f"{n}:smoke") for n in NAMES]
    assert smoke[1].train.init_from == "workdirs/phi4_sft_smoke"
    assert smoke[2].train.init_from == "workdirs/phi4_dpo_pts_smoke"


def reward_accuracy(policy, ref):
    """Fraction of pairs whose implicit reward prefers the chosen completion (beta > 0 does
    not change the sign)."""
    return float(np.mean((policy[:, 0] - ref[:, 0]) > (policy[:, 1] - ref[:, 1])))


@pytest.mark.slow
def test_tiny_chain_sft_dpo_raises_held_out_reward_accuracy(tmp_path, capsys):
    data = tmp_path / "data"
    _, sft_report = sft_store.build_store(
        [_write_conversations(tmp_path / "convs.jsonl")], str(data / "sft"), max_tokens=64)
    assert sft_report.kept == 200 and not sft_report.skipped
    train_pairs, held_out = demo.demo_pairs()
    with JsonlWriter(tmp_path / "train.jsonl", append=False) as w:
        w.write(train_pairs)
    with JsonlWriter(tmp_path / "held_out.jsonl", append=False) as w:
        w.write(held_out)

    sft = experiments.get_config("phi4_sft:smoke")
    sft.data.data_root = str(data)
    sft.data.seq_len = 64
    sft.train.init_from = None
    sft.train.steps = 4
    _keep_warmup(sft)
    sft.train.checkpoint_every = 4
    sft_run = loop.run(sft, str(tmp_path / "sft"), devices=ONE)
    assert sft_run.step == 4 and np.isfinite(sft_run.metrics["loss"])

    pts = experiments.get_config("phi4_dpo_pts:smoke")
    pts.dpo.pairs = str(tmp_path / "train.jsonl")
    pts.train.init_from = str(tmp_path / "sft")
    pts.train.steps = 8
    _keep_warmup(pts)
    pts.train.checkpoint_every = 8
    computed = reference.COUNTS["computed"]
    pts_run = loop.run(pts, str(tmp_path / "pts"), devices=ONE)
    assert reference.COUNTS["computed"] == computed + 1  # the SFT checkpoint's log-probs
    first_step = _first_record(tmp_path / "pts")
    assert first_step["loss"] == pytest.approx(math.log(2), abs=1e-4)

    prog = loop.build(pts, devices=ONE)
    pairs = batches.load_pairs(str(tmp_path / "held_out.jsonl"),
                               vocab_size=prog.model_config.vocab_size, seq_len=64)
    scorer = reference.Scorer(prog, max_pairs_per_row=16)

    def logps(workdir):
        params = checkpoint.restore_params(str(workdir), prog.abstract_state.params,
                                           prog.state_shardings.params)
        return scorer.logps(params, pairs)

    ref, after = logps(tmp_path / "sft"), logps(tmp_path / "pts")
    before_acc, after_acc = reward_accuracy(ref, ref), reward_accuracy(after, ref)
    pref_before = float(np.mean(ref[:, 0] > ref[:, 1]))
    pref_after = float(np.mean(after[:, 0] > after[:, 1]))
    margin = float(np.mean((after[:, 0] - ref[:, 0]) - (after[:, 1] - ref[:, 1]))) * pts.dpo.beta
    with capsys.disabled():
        print(f"\nheld-out ({len(pairs)} pairs): reward accuracy {before_acc:.2f} -> "
              f"{after_acc:.2f}, mean reward margin {margin:.3f}; policy prefers chosen "
              f"{pref_before:.2f} (SFT) -> {pref_after:.2f}; train rewards/accuracies "
              f"{pts_run.metrics['rewards/accuracies']:.2f}")
    assert before_acc == 0.0 and after_acc >= 0.9 and margin > 0
    assert pref_after > pref_before

    judge = experiments.get_config("phi4_dpo_judge:smoke")
    with JsonlWriter(tmp_path / "judge.jsonl", append=False) as w:
        w.write(held_out[:8])  # any pairs: this stage checks the chaining
    judge.dpo.pairs = str(tmp_path / "judge.jsonl")
    judge.train.init_from = str(tmp_path / "pts")
    judge.train.steps = 1
    _keep_warmup(judge)
    loop.run(judge, str(tmp_path / "judge"), devices=ONE)
    assert _first_record(tmp_path / "judge")["loss"] == pytest.approx(math.log(2), abs=1e-4)


def _keep_warmup(config):
    """The smoke runs are shorter than their warm-up; a decay end at the warm-up's end keeps
    every learning rate the run sees (a warm-up longer than the decay is a config error)."""
    if config.optimizer.warmup_steps > config.train.steps:
        config.optimizer.decay_steps = config.optimizer.warmup_steps


def _write_conversations(path):
    with open(path, "w") as f:
        f.writelines(json.dumps(c) + "\n" for c in demo.demo_conversations(200))
    return str(path)


def _first_record(workdir):
    with open(workdir / "metrics.jsonl") as f:
        return json.loads(f.readline())
