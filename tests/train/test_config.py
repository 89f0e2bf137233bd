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


@pytest.mark.parametrize("section,field,value,expected", [
    ("optimizer", "peak_lr", -3e-4, "optimizer.peak_lr=-0.0003 must be >= 0"),
    ("optimizer", "peak_lr", float("nan"), "optimizer.peak_lr=nan must be a finite number"),
    ("optimizer", "weight_decay", -0.1, "optimizer.weight_decay=-0.1 must be >= 0"),
    ("optimizer", "weight_decay", float("inf"), "optimizer.weight_decay=inf must be a finite"),
    ("optimizer", "b1", 1.0, "optimizer.b1=1.0 must be >= 0 and < 1"),
    ("optimizer", "b2", -0.5, "optimizer.b2=-0.5 must be >= 0 and < 1"),
    ("optimizer", "eps", 0.0, "optimizer.eps=0.0 must be > 0"),
    ("optimizer", "min_lr_ratio", 1.5, "optimizer.min_lr_ratio=1.5 must be >= 0 and <= 1"),
    ("optimizer", "warmup_steps", -1, "optimizer.warmup_steps=-1 must be >= 0"),
    ("optimizer", "warmup_steps", 7, "optimizer.warmup_steps=7 is longer than "
                                     "optimizer.decay_steps=5"),
    ("optimizer", "decay_steps", 0, "optimizer.decay_steps=0 must be positive"),
    ("optimizer", "decay_exclude", ("norm", "("), "optimizer.decay_exclude: '(' is not a regular"),
    ("optimizer", "name", "sgd", "optimizer.name='sgd'; only 'adamw'"),
    ("train", "clip_norm", 0.0, "train.clip_norm=0.0 must be > 0 (None: no clipping)"),
    ("train", "clip_norm", -1.0, "train.clip_norm=-1.0 must be > 0"),
    ("train", "z_loss", float("nan"), "train.z_loss=nan must be a finite number >= 0"),
    ("train", "lease_timeout_s", 0.0, "train.lease_timeout_s=0.0 must be > 0"),
    ("train", "global_batch", 0, "train.global_batch=0 must be positive"),
    ("train", "per_device_batch", -2, "train.per_device_batch=-2 must be positive"),
    ("train", "peak_flops", -1.0, "train.peak_flops=-1.0 must be > 0"),
])
def test_values_out_of_range_name_the_field(section, field, value, expected):
    raw = tiny_config().to_dict()
    if field == "warmup_steps" and value == 7:
        raw["optimizer"]["decay_steps"] = 5
    raw[section][field] = value
    with pytest.raises(ConfigError) as err:
        RunConfig.from_experiment(raw)
    assert expected in str(err.value)


def test_a_warmup_longer_than_the_run_is_an_error():
    config = tiny_config(steps=6)
    config.optimizer.decay_steps = None  # the decay ends with the run
    config.optimizer.warmup_steps = 10
    with pytest.raises(ConfigError, match=r"optimizer.warmup_steps=10 is longer than "
                                          r"train.steps=6: the learning rate would never reach "
                                          r"optimizer.peak_lr=0.003"):
        RunConfig.from_experiment(config)
    config.optimizer.warmup_steps = 6  # warm-up ending with the run is allowed
    assert RunConfig.from_experiment(config).optimizer.warmup_steps == 6


def test_a_bad_learning_rate_fails_before_anything_runs(tmp_path):
    config = tiny_config()
    config.optimizer.peak_lr = -1.0
    with pytest.raises(ConfigError, match="optimizer.peak_lr=-1.0 must be >= 0"):
        loop.run(config, str(tmp_path))
    assert not os.listdir(tmp_path)


def test_the_loop_rejects_an_unknown_key_before_anything_runs(tmp_path):
    config = tiny_config()
    config.train.warmup = 3
    with pytest.raises(ConfigError, match="train.warmup"):
        loop.run(config, str(tmp_path))
    assert not os.listdir(tmp_path)
