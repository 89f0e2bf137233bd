"""launch.local: experiment names, --exp.FIELD=VALUE overrides, every experiment parses."""

import pytest

import experiments
from launch import local
from phi4_jax.train import loop, objectives


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
    assert loop.model_config(config.model).remat == "full"


def test_separate_argument_form_and_arg_string():
    assert local.resolve_exp_flag(["p", "--exp", "tiny_pretrain:x"])[2].endswith(
        "experiments/tiny_pretrain.py:x")


def test_unknown_experiment_and_field_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        local.parse(["prog", "--exp=nope", f"--workdir={tmp_path}"])
    with pytest.raises(Exception, match="stepz"):
        local.parse(["prog", "--exp=tiny_pretrain", f"--workdir={tmp_path}",
                     "--exp.train.stepz=3"])
    with pytest.raises(SystemExit, match="usage"):
        local.parse(["prog", "--exp=tiny_pretrain"])


@pytest.mark.parametrize("name", experiments.names())
def test_every_experiment_builds_its_model_config(name):
    config = experiments.get_config(name)
    assert config.name == name
    loop.model_config(config.model)  # ModelConfig.validate runs
    objectives.from_config(config)  # the objective exists
