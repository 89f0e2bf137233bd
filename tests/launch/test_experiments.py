"""Every experiment parses and builds; smoke sizes build on CPU; overrides; recipe numbers.

The recipe figures below are typed from /work/shared/reference/phi4_recipe.md (the paper), not
read from the code, so a drifting default fails here.
"""

import math

import jax
import pytest

import experiments
from data_mixtures import ablations
from experiments import ablation_7b_1t
from experiments.base import parse_arg, shrink
from launch import local
from phi4_jax.data.mixture import load_mixture
from phi4_jax.data.plan import token_plan
from phi4_jax.train import loop, optimizer
from phi4_jax.train.config import RunConfig

MINE = ("phi4_pretrain", "phi4_midtrain", "ablation_7b_1t")
PHI4_PARAMS = 14_659_507_200  # the recipe (released checkpoint)


def model_of(config):
    """The ModelConfig an experiment config converts to (its preset plus overrides)."""
    return RunConfig.from_experiment(config).model


def devices_for(batch: int) -> list:
    """As many CPU devices (<= 8, a power of two) as split `batch` rows."""
    n = 8
    while batch % n:
        n //= 2
    return jax.devices()[:n]


@pytest.mark.parametrize("name", experiments.names())
def test_smoke_size_builds_on_cpu(name):
    config = experiments.get_config(f"{name}:smoke")
    prog = loop.build(config, devices_for(config.train.global_batch))
    assert prog.param_count < 50e6, "smoke sizes use the tiny model"
    assert config.data.seq_len <= prog.model_config.max_seq_len


@pytest.mark.parametrize("name", MINE)
def test_full_size_builds_on_eight_devices(name):
    """Validation, eval_shape of the 14B / 7B state and shardings: no allocation, no compile."""
    config = experiments.get_config(name)
    prog = loop.build(config, jax.devices())
    if name != "ablation_7b_1t":
        assert prog.param_count == PHI4_PARAMS
    else:
        assert 7.7e9 < prog.param_count < 7.9e9
    run = RunConfig.from_experiment(config)
    assert loop.micro_batches(run.train, prog.rules) == config.train.global_batch // 8


def test_pretrain_recipe_numbers():
    c = experiments.get_config("phi4_pretrain")
    m = model_of(c)
    assert (c.train.global_batch, c.data.seq_len) == (5760, 4096)
    assert c.optimizer.peak_lr == 3e-4 and c.optimizer.weight_decay == 0.1
    assert m.rope_theta == 10_000 and m.num_layers == 40 and m.embed_dim == 5120
    assert (m.remat, m.scan_layers, m.dtype, m.param_dtype) == ("full", True, "bfloat16",
                                                                 "float32")
    assert c.mesh.rules == "fsdp" and c.data.mixture == "phi4_pretrain"
    tokens = c.train.steps * 5760 * 4096
    assert 10e12 - 5760 * 4096 < tokens <= 10e12  # ~10T tokens, whole steps
    # Linear warm-up and linear decay (the paper; seed 001's cosine is wrong).
    _, lr = optimizer.from_config(RunConfig.from_experiment(c).optimizer, c.train.clip_norm,
                                  c.train.steps)
    w, end = c.optimizer.warmup_steps, c.train.steps
    floor = 3e-4 * c.optimizer.min_lr_ratio
    assert math.isclose(lr(w // 2), 3e-4 * (w // 2) / w, rel_tol=1e-5)
    assert math.isclose(lr(w), 3e-4, rel_tol=1e-5)
    mid = (w + end) // 2
    assert math.isclose(lr(mid), 3e-4 + (floor - 3e-4) * (mid - w) / (end - w), rel_tol=1e-4)


def test_midtrain_recipe_numbers():
    c = experiments.get_config("phi4_midtrain")
    pre = experiments.get_config("phi4_pretrain")
    assert c.data.seq_len == 16384 and model_of(c).rope_theta == 250_000
    assert math.isclose(c.optimizer.peak_lr, 3e-5) and c.optimizer.weight_decay == 0.1
    assert c.optimizer.peak_lr == pre.optimizer.peak_lr / 10
    assert c.train.global_batch * 16384 == 5760 * 4096  # tokens per step kept
    assert 250e9 - 5760 * 4096 < c.train.steps * 5760 * 4096 <= 250e9
    assert c.train.init_from and c.data.mixture == "phi4_midtrain"
    assert model_of(c).num_layers == 40  # the same 14B model


def test_ablation_recipe_numbers_and_sweep():
    c = experiments.get_config("ablation_7b_1t")
    assert c.model.preset == "ablation_7b" and model_of(c).rope_theta == 10_000
    assert 1e12 - 5760 * 4096 < c.train.steps * 5760 * 4096 <= 1e12
    specs = ablation_7b_1t.sweep()
    assert len(specs) == len(set(specs)) >= 4
    mixtures = {experiments.get_config(s).data.mixture for s in specs}
    assert len(mixtures) == len(specs)
    for spec in ablation_7b_1t.sweep("smoke"):
        assert experiments.get_config(spec).model.preset == "tiny"


# Table 5 (the recipe): fraction and unique tokens per source.
TABLE_5 = {"web": (0.15, 1.3e12), "web_rewrites": (0.15, 290e9), "synthetic": (0.40, 290e9),
           "code": (0.20, 820e9), "acquired": (0.10, 580e9)}


@pytest.mark.parametrize("variant", list(ablations.VARIANTS))
def test_ablation_mixtures_load_and_plan(variant):
    mixture = load_mixture(ablations.module(variant))
    weights = mixture.fractions()
    assert math.isclose(sum(weights.values()), 1.0) and set(weights) == set(TABLE_5)
    plan = token_plan(mixture)  # epochs over 1T tokens
    epochs = {s.name: s.epochs for s in plan.sources}
    for role, (_, unique) in TABLE_5.items():
        assert math.isclose(epochs[role], weights[role] * 1e12 / unique, rel_tol=1e-6)
    if variant == "table5":
        assert weights == pytest.approx({k: f for k, (f, _) in TABLE_5.items()})
    if variant == "synthetic_only":
        assert math.isclose(epochs["synthetic"], 1e12 / 290e9, rel_tol=1e-6)  # 3.45 epochs


def test_overrides_keep_the_token_budget(tmp_path):
    config, _ = local.parse(["p", "--exp=phi4_pretrain", f"--workdir={tmp_path}",
                             "--exp.train.global_batch=2880", "--exp.optimizer.peak_lr=1e-4"])
    assert config.train.steps == 10**13 // (2880 * 4096) and config.optimizer.peak_lr == 1e-4
    config, _ = local.parse(["p", "--exp=phi4_midtrain:smoke", f"--workdir={tmp_path}",
                             "--exp.train.init_from=/runs/pre", "--exp.train.steps=7"])
    assert config.train.steps == 7 and config.train.init_from == "/runs/pre"
    config, _ = local.parse(["p", "--exp=ablation_7b_1t:mixture=synthetic_only,smoke",
                             f"--workdir={tmp_path}", "--exp.model.remat=none"])
    assert config.data.mixture == "ablation_smoke_synthetic_only" and config.model.remat == "none"


def test_bad_arguments_and_fields_fail_before_compiling():
    with pytest.raises(ValueError, match="unknown experiment argument 'smok'.*smoke"):
        experiments.get_config("phi4_pretrain:smok")
    with pytest.raises(ValueError, match="unknown mixture variant 'web_only'"):
        experiments.get_config("ablation_7b_1t:mixture=web_only")
    config = experiments.get_config("phi4_pretrain")
    config.train.per_device_batch = 7
    with pytest.raises(ValueError, match=r"train\.per_device_batch=7"):
        loop.build(config, jax.devices())


def test_parse_arg_and_shrink():
    args = parse_arg("smoke, mixture=more_web,steps=3", smoke=False, mixture="table5", steps=1)
    assert (args.smoke, args.mixture, args.steps) == (True, "more_web", 3)
    assert parse_arg("smoke=false", smoke=True).smoke is False
    c = shrink(experiments.get_config("phi4_midtrain"), seq_len=16384, global_batch=1)
    assert model_of(c).rope_theta == 250_000  # kept: the experiment's choice
    assert math.isclose(c.optimizer.peak_lr, 3e-5) and c.model.remat == "full"
    assert c.model.preset == "tiny" and c.model.dtype == "float32"
    vocab_block = 16384 * model_of(c).vocab_size / c.train.loss_vocab_chunks
    assert vocab_block * 4 <= 256 * 2**20


@pytest.mark.parametrize("variant", ["table5", "synthetic_only"])
def test_ablation_smoke_reads_the_variants_weights(variant, tmp_path):
    config = experiments.get_config(f"ablation_7b_1t:smoke,mixture={variant}")
    assert config.data.mixture == f"ablation_smoke_{variant}"
    mixture = load_mixture(config.data.mixture, cache_dir=str(tmp_path))
    assert mixture.fractions() == pytest.approx(ablations.weights(variant))
    assert set(mixture.fractions()) == set(TABLE_5)  # the embedded roles stand in
