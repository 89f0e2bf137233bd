"""Train-step throughput on CPU: phi4_jax vs transformers Phi3ForCausalLM, same run, same work.

    JAX_PLATFORMS=cpu python bench/train_step.py            # small preset, batch 2 x 512
    JAX_PLATFORMS=cpu python bench/train_step.py --batch 4 --seq 256 --rounds 5

Both sides: the `small` preset's shape (8 layers, width 768, 12 heads / 4 KV heads, SwiGLU 2560,
vocab 32064), float32, no rematerialization, full-sequence logits, cross-entropy over every
position, AdamW (b 0.9/0.95, eps 1e-8, decay 0.1) with global-norm clipping at 1.0, the same
token batch. JAX runs the project's own jitted, donated train step (phi4_jax.train.program);
PyTorch runs eager Phi3ForCausalLM with SDPA attention and torch.optim.AdamW. Rounds alternate
between the two so machine load hits both alike; within a round each side first runs one
untimed step (`--settle`), because a step that starts right after the other side's runs up to
15% slower. The table reports the best round (the least disturbed by other load) and the median.

Model FLOPs per token follow phi4_jax.train.flops (6 x matmul params + causal attention). The
CPU's matmul peak is the best of a float32 square-matmul chain measured with XLA and with torch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--rounds", type=int, default=4, help="timed steps per side")
    p.add_argument("--scan_layers", type=int, default=0, help="1: lax.scan over layers")
    p.add_argument("--settle", type=int, default=1, help="untimed steps before each timed one: "
                   "a step run right after the other side's is up to 15%% slower (its thread "
                   "pools still spinning, caches cold)")
    p.add_argument("--xla_flags", default="", help="extra XLA_FLAGS for the JAX side")
    return p.parse_args()


def jax_side(args, batch):
    import jax
    import numpy as np

    import experiments
    from phi4_jax.train import loop

    config = experiments.get_config("tiny_pretrain")
    config.model.preset = args.preset
    config.model.dtype = "float32"
    config.model.remat = "none"
    config.model.scan_layers = bool(args.scan_layers)
    config.data.seq_len = args.seq
    config.train.global_batch = args.batch
    config.train.loss_vocab_chunks = 1
    config.optimizer.peak_lr = 3e-4
    config.optimizer.warmup_steps = 0
    config.train.steps = 1000
    prog = loop.build(config, devices=jax.devices()[:1])
    step = prog.step.lower(*prog.abstract_inputs()).compile()
    state = prog.init()
    device_batch = prog.put_batch({k: np.asarray(v) for k, v in batch.items()})
    holder = {"state": state}

    def run():
        holder["state"], metrics = step(holder["state"], device_batch)
        return float(metrics["loss"])  # waits for the step

    return prog.model_config, run


def torch_side(model_config, batch):
    import torch
    import transformers

    from phi4_jax.convert.hf_config import to_hf_config

    torch.manual_seed(0)
    hf = to_hf_config(model_config)
    hf.update(torch_dtype="float32", dtype="float32")
    cfg = transformers.Phi3Config(**hf)
    model = transformers.Phi3ForCausalLM._from_config(cfg, attn_implementation="sdpa")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1)
    tokens = torch.as_tensor(batch["tokens"], dtype=torch.long)
    targets = torch.as_tensor(batch["targets"], dtype=torch.long)
    positions = torch.as_tensor(batch["positions"], dtype=torch.long)

    def run():
        logits = model(input_ids=tokens, position_ids=positions, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]).float(),
                                                 targets.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss)

    return run


def torch_matmul_peak(size=2048, seconds=1.0):
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 2.0 * size**3 * 4 / (time.perf_counter() - start))
    return best


def xla_matmul_bound(cfg, batch: int, seq: int, repeats: int = 6) -> tuple[float, float]:
    """(seconds, FLOPs) of every matmul of one training step, each timed alone with XLA:CPU.

    Forward X.W, backward dY.W^T and X^T.dY of each projection (q, k, v, o, gate, up, down per
    layer, the vocabulary projection once) and the attention products (QK^T and PV forward, two
    products each backward), each the best of `repeats` runs of one jitted dot_general with the
    layout the step uses. No step built on XLA:CPU's matmuls can beat the sum.
    """
    import jax
    import numpy as np

    t, d, h = batch * seq, cfg.embed_dim, cfg.head_dim
    n, k, f, v = cfg.num_heads * h, cfg.num_kv_heads * h, cfg.mlp_dim, cfg.vocab_size

    def timed(a_shape, b_shape, dims) -> tuple[float, float]:
        a = np.random.default_rng(0).standard_normal(a_shape, np.float32)
        b = np.random.default_rng(1).standard_normal(b_shape, np.float32)
        fn = jax.jit(lambda a, b: jax.lax.dot_general(a, b, dims))
        out = jax.block_until_ready(fn(a, b))
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(a, b))
            best = min(best, time.perf_counter() - start)
        contracted = np.prod([a_shape[i] for i in dims[0][0]])
        return best, 2.0 * out.size * contracted

    cases = []
    for fan_in, fan_out, count in [(d, n, 1), (d, k, 2), (n, d, 1), (d, f, 2), (f, d, 1)]:
        for a, b, dims in [((t, fan_in), (fan_in, fan_out), (((1,), (0,)), ((), ()))),
                           ((t, fan_out), (fan_in, fan_out), (((1,), (1,)), ((), ()))),
                           ((t, fan_in), (t, fan_out), (((0,), (0,)), ((), ())))]:
            cases.append((a, b, dims, count * cfg.num_layers))
    for a, b, dims in [((t, d), (d, v), (((1,), (0,)), ((), ()))),
                       ((t, v), (d, v), (((1,), (1,)), ((), ()))),
                       ((t, d), (t, v), (((0,), (0,)), ((), ())))]:
        cases.append((a, b, dims, 1))
    # Attention as the model groups it (per row and KV head, the G query heads of the group
    # stacked): [BK, G S, H] x [BK, S, H] -> scores, [BK, G S, S] x [BK, S, H] -> context.
    bk, gs = batch * cfg.num_kv_heads, cfg.num_heads // cfg.num_kv_heads * seq
    qk = (((2,), (2,)), ((0,), (0,)))
    pv = (((2,), (1,)), ((0,), (0,)))
    for a, b, dims in [((bk, gs, h), (bk, seq, h), qk), ((bk, gs, seq), (bk, seq, h), pv)]:
        cases.append((a, b, dims, 3 * cfg.num_layers))  # forward + two backward products
    seconds = flop = 0.0
    for a, b, dims, count in cases:
        sec, fl = timed(a, b, dims)
        seconds, flop = seconds + count * sec, flop + count * fl
    return seconds, flop


def main():
    args = parse_args()
    if args.xla_flags:  # before jax is imported
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    import numpy as np

    from phi4_jax.train import flops

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 32064, (args.batch, args.seq + 1)).astype(np.int32)
    batch = {"tokens": tokens[:, :-1], "targets": tokens[:, 1:],
             "positions": np.tile(np.arange(args.seq, dtype=np.int32), (args.batch, 1)),
             "segment_ids": np.ones((args.batch, args.seq), np.int32),
             "loss_mask": np.ones((args.batch, args.seq), np.float32)}

    t0 = time.perf_counter()
    model_config, jax_step = jax_side(args, batch)
    print(f"jax: built and compiled in {time.perf_counter() - t0:.1f}s", flush=True)
    torch_step = torch_side(model_config, batch)
    sides = {"phi4_jax (JAX, jit)": jax_step, "transformers Phi3 (PyTorch)": torch_step}
    losses = {name: fn() for name, fn in sides.items()}  # warm-up step each
    print("first-step losses (same init scale, different init): "
          + ", ".join(f"{k} {v:.3f}" for k, v in losses.items()), flush=True)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.rounds):
        for name, fn in sides.items():
            for _ in range(args.settle):  # untimed: the other side's threads wind down
                fn()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)

    import jax

    peak = max(flops.measure_matmul_peak(jax.devices()[0], size=2048, seconds=1.0),
               torch_matmul_peak())
    tokens_per_step = args.batch * args.seq
    step_flops = flops.flops_per_token(model_config, args.seq) * tokens_per_step
    base = "transformers Phi3 (PyTorch)"
    print(f"\n{args.preset} preset, float32, batch {args.batch} x {args.seq} tokens, "
          f"{os.cpu_count()} CPU cores, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; model "
          f"{step_flops / tokens_per_step / 1e6:.0f} MFLOP/token; CPU float32 matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s. best = fastest of {args.rounds} alternating rounds (least "
          "disturbed by other load on the machine), median beside it.\n")
    print(f"| {'implementation':<28} | best step (s) | median (s) | tokens/s | GFLOP/s | "
          "% of matmul peak | vs transformers (best / median) |")
    print(f"|{'-' * 30}|--------------:|-----------:|---------:|--------:|-----------------:|"
          "--------------------------------:|")
    for name, t in times.items():
        best, med = min(t), statistics.median(t)
        print(f"| {name:<28} | {best:13.3f} | {med:10.3f} | {tokens_per_step / best:8.0f} | "
              f"{step_flops / best / 1e9:7.1f} | {100 * step_flops / best / peak:15.1f}% | "
              f"{min(times[base]) / best:14.2f}x / {statistics.median(times[base]) / med:.2f}x |")
    bound, matmul_flops = xla_matmul_bound(model_config, args.batch, args.seq)
    print(f"\nbound: the step's matmuls alone ({matmul_flops / 1e9:.0f} GFLOP), each timed by "
          f"itself with XLA:CPU, take {bound:.3f} s ({matmul_flops / bound / 1e9:.0f} GFLOP/s); "
          f"no XLA:CPU step can be faster, so the best possible ratio against transformers' "
          f"best step is {min(times[base]) / bound:.2f}x.")


if __name__ == "__main__":
    main()
