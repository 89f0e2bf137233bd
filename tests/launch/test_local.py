"""launch.local: experiment names, --exp.FIELD=VALUE overrides, every experiment parses, a
finished workdir reports its result."""

import pytest

import experiments
from launch import local
from phi4_jax import cli
from phi4_jax.train import objectives
from phi4_jax.train.config import RunConfig


def test_overrides_apply_with_types(tmp_path):
    config, workdir = local.parse([
        "prog", "--exp=tiny_pretrain", f"--workdir={tmp_path}", "--exp.train.steps=20",
        "--exp.train.checkpoint_every=5", "--exp.model.remat=full", "--exp.mesh.ici.fsdp=4",
        "--exp.mesh.rule_overrides.kv_heads=", "--exp.optimizer.peak_lr=1e-3",
        "--exp.train.init_from=/some/run"])
    assert workdir == str(tmp_path)
    assert config.train.steps == 20 and config.train.checkpoint_every == 5
    assert config.model.remat == "full" and config.mesh.ici.fsdp == 4
    assert config.mesh.rule_overrides.kv_heads == "" and config.optimizer.peak_lr == 1e-3
    assert config.train.init_from == "/some/run"
    run = RunConfig.from_experiment(config)
    assert run.model.remat == "full" and run.mesh.ici["fsdp"] == 4 and run.train.steps == 20


def test_separate_argument_form_and_arg_string():
    assert local.resolve_exp_flag(["p", "--exp", "tiny_pretrain:x"])[2].endswith(
        "experiments/tiny_pretrain.py:x")


def test_unknown_experiment_and_field_are_rejected(tmp_path):
    with pytest.raises(cli.UsageError, match="unknown experiment 'nope'"):
        local.parse(["prog", "--exp=nope", f"--workdir={tmp_path}"])
    with pytest.raises(cli.UsageError, match='no field .stepz.; did you mean "train.steps"'):
        local.parse(["prog", "--exp=tiny_pretrain", f"--workdir={tmp_path}",
                     "--exp.train.stepz=3"])
    with pytest.raises(cli.UsageError, match="--workdir is required"):
        local.parse(["prog", "--exp=tiny_pretrain"])


@pytest.mark.parametrize("name", experiments.names())
def test_every_experiment_builds_its_model_config(name):
    config = experiments.get_config(name)
    assert config.name == name
    run = RunConfig.from_experiment(config)  # typed sections; ModelConfig.validate runs
    assert objectives.from_config(run).name == config.objective  # the objective exists


TINY = ["--exp=tiny_pretrain", "--exp.data.source=synthetic", "--exp.model.vocab_size=256",
        "--exp.data.seq_len=32", "--exp.train.global_batch=8", "--exp.train.loss_vocab_chunks=1",
        "--exp.train.steps=2", "--exp.optimizer.warmup_steps=1", "--exp.train.checkpoint_every=2",
        "--exp.train.log_every=1",
        "--exp.train.peak_flops=1e12", "--exp.log.tensorboard=False"]


def test_rerunning_a_finished_workdir_prints_the_result(tmp_path, capsys):
    first = local.main(["prog", *TINY, f"--workdir={tmp_path}"])
    trained = capsys.readouterr().out
    assert first.step == 2 and "step 2/2" in trained
    again = local.main(["prog", *TINY, f"--workdir={tmp_path}"])
    out = capsys.readouterr().out
    assert again.step == 2 and {k: again.metrics[k] for k in first.metrics} == first.metrics
    assert "tiny_pretrain: run complete at step 2/2" in out
    assert f"last logged metrics (step 2): loss {first.metrics['loss']:.4f} | lr" in out
