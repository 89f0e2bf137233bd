"""The batch planner (launch/planner.py): exact global-batch realization, clear refusals."""

import pytest

import experiments
from launch import planner
from phi4_jax.sharding import topology


@pytest.mark.parametrize("tpu,slices", [("v5p-128", 1), ("v5p-256", 1), ("v5p-768", 1),
                                        ("v5p-1024", 2), ("v4-512", 1), ("v6e-256", 1)])
def test_plan_realizes_exactly_5760_sequences(tpu, slices):
    config = experiments.get_config("phi4_pretrain")
    plan = planner.plan_batch(config, tpu, slices)
    topo = topology.describe(tpu, slices)
    assert plan.data * plan.fsdp * plan.tensor == topo.chips * slices
    assert plan.micro_batches * plan.data * plan.fsdp * plan.per_device_batch == 5760
    assert 5120 % plan.fsdp == 0 and plan.estimated_bytes <= 0.85 * topo.hbm_bytes
    plan.apply(config)
    assert config.mesh.dcn.data == slices
    assert config.mesh.ici.data * slices * config.mesh.ici.fsdp == plan.data * plan.fsdp
    assert config.train.per_device_batch == plan.per_device_batch
    assert "global batch 5760" in plan.describe()


def test_pure_fsdp_is_preferred_and_tensor_parallel_replicates_kv_heads():
    config = experiments.get_config("phi4_pretrain")
    plan = planner.plan_batch(config, "v5p-128")
    assert (plan.data, plan.fsdp, plan.tensor) == (1, 64, 1)  # 5760 = 90 x 64
    # Mid-training's 1440 = 2^5 x 45 sequences do not split over 64 chips: tensor=2 x fsdp=32.
    mid = experiments.get_config("phi4_midtrain")
    plan = planner.plan_batch(mid, "v5p-128")
    assert (plan.tensor, plan.data * plan.fsdp) == (2, 32)
    assert not plan.replicate_kv_heads  # 10 KV heads split 2 ways
    plan.apply(mid)
    assert mid.mesh.rules == "fsdp_tp" and mid.mesh.rule_overrides.kv_heads is None
    # 2 x v5p-1024 (1024 chips) cannot split 5760 = 2^7 x 45 without tensor=8, which does not
    # divide the 10 KV heads: they are replicated.
    wide = experiments.get_config("phi4_pretrain")
    plan = planner.plan_batch(wide, "v5p-1024", 2)
    assert plan.tensor == 8 and plan.replicate_kv_heads
    plan.apply(wide)
    assert wide.mesh.rule_overrides.kv_heads == ""


def test_impossible_batch_is_explained():
    config = experiments.get_config("phi4_pretrain")
    config.train.global_batch = 7
    with pytest.raises(planner.BatchPlanError, match=r"exactly 7 \(7\) sequences.*do not split"):
        planner.plan_batch(config, "v5p-128")


def test_memory_estimate_grows_with_rows_and_shrinks_with_shards():
    from phi4_jax.model import preset
    m = preset("phi4_14b")
    est = lambda **kw: planner.estimate_bytes(m, **{"fsdp": 64, "tensor": 1, "rows": 1,
                                                    "seq_len": 4096, "accumulate": True, **kw})
    assert est(rows=2) > est() > est(fsdp=128)
    assert est(accumulate=False) < est()
