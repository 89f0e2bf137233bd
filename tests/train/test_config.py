"""The typed run config: every experiment converts; unknown keys and wrong types are named."""

import os

import pytest
from ml_collections import config_dict

import experiments
from phi4_jax.train import loop
from phi4_jax.train.config import ConfigError, RunConfig, TrainConfig
from tests.train.conftest import tiny_config


@pytest.mark.parametrize("spec", [s for n in experiments.names() for s in (n, f"{n}:smoke")])
def test_every_experiment_converts(spec):
    config = experiments.get_config(spec)
    run = RunConfig.from_experiment(config)
    assert run.name == config.name and run.train.steps == config.train.steps
    assert run.data.seq_len == config.data.seq_len and run.section("dpo").loss == "sigmoid"
    assert run.optimizer.decay_exclude == tuple(config.optimizer.decay_exclude)
    assert run.experiment["train"]["steps"] == config.train.steps  # JSON for config.json
    assert RunConfig.of(run) is run


def test_values_are_typed_and_the_preset_fills_none():
    config = tiny_config()
    config.optimizer.peak_lr = 1  # an int is a valid float
    config.model.num_layers = 3
    run = RunConfig.from_experiment(config)
    assert isinstance(run.optimizer.peak_lr, float) and run.optimizer.peak_lr == 1.0
    assert run.model.num_layers == 3 and run.model.embed_dim == 128  # the tiny preset's
    assert isinstance(run.train, TrainConfig) and run.train.init_from is None
    assert run.mesh.ici == {"data": 1, "fsdp": -1, "tensor": 1}


def test_unknown_keys_name_the_key_and_list_the_known_ones():
    config = tiny_config()
    config.train.stepz = 3
    with pytest.raises(ConfigError, match=r"unknown config key train.stepz .*'steps'"):
        RunConfig.from_experiment(config)
    config = tiny_config()
    config.extra = config_dict.ConfigDict({"a": 1})
    with pytest.raises(ConfigError, match=r"unknown config key extra .*'train'"):
        RunConfig.from_experiment(config)
    config = tiny_config()
    config.model.depth = 3
    with pytest.raises(ConfigError, match=r"model.depth .*'num_layers'"):
        RunConfig.from_experiment(config)
    raw = tiny_config().to_dict()
    del raw["log"]["wandb"]
    with pytest.raises(ConfigError, match=r"log lacks \['wandb'\]"):
        RunConfig.from_experiment(raw)


@pytest.mark.parametrize("section,field,value,expected", [
    ("train", "steps", 2.5, "train.steps=2.5: expected int, got float"),
    ("train", "async_checkpoint", 1, "train.async_checkpoint=1: expected bool, got int"),
    ("data", "mixture", 7, "data.mixture=7: expected str"),
    ("dpo", "beta", "big", "dpo.beta='big': expected float"),
    ("mesh", "ici", {"fsdp": "x"}, "mesh.ici.fsdp='x': expected int"),
    ("model", "rope_theta", "x", "model.rope_theta='x': expected float"),
])
def test_wrong_types_name_the_field(section, field, value, expected):
    raw = tiny_config().to_dict()
    raw[section][field] = value
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        RunConfig.from_experiment(raw)


def test_an_objective_section_is_required_only_by_its_objective():
    raw = tiny_config().to_dict()
    del raw["dpo"]
    assert "dpo" not in RunConfig.from_experiment(raw).sections
    raw["objective"] = "dpo"
    with pytest.raises(ConfigError, match=r"lacks \['dpo'\]"):
        RunConfig.from_experiment(raw)


def test_bad_values_fail_in_the_typed_sections():
    with pytest.raises(ValueError, match="train.log_every=0 must be positive"):
        RunConfig.from_experiment(tiny_config(log_every=0))
    config = tiny_config()
    config.objective = "ppo"
    with pytest.raises(ConfigError, match=r"objective='ppo' is not registered.*'next_token'"):
        RunConfig.from_experiment(config)


def test_the_loop_rejects_an_unknown_key_before_anything_runs(tmp_path):
    config = tiny_config()
    config.train.warmup = 3
    with pytest.raises(ConfigError, match="train.warmup"):
        loop.run(config, str(tmp_path))
    assert not os.listdir(tmp_path)
