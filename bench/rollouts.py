"""PTS-shaped rollouts and server throughput on SmolLM2-135M (real weights), CPU.

Rollouts: 8 prefixes of 200 tokens (a chat-rendered CHAMP math problem and the start of its
solution), 16 rollouts each, 64 new tokens per rollout (stop tokens off, as transformers gets
min_new_tokens), temperature 1, no top-k / top-p. phi4_jax samples them with
`ModelSampler` (one prefill per prefix, the n rows decode from its cache); transformers with
`generate(num_return_sequences=16, do_sample=True)`, timed both per prefix (16 rows a call) and
for all 8 prefixes in one call (128 rows), the faster reported. Both sides load the same GGUF
file in the same dtype, each in its own subprocess of this run, one after the other
(torch.set_num_threads(2) for the peer, as bench/decode.py). rollout tokens/s = 8 x 16 x 64 /
median wall time of a full workload; our first run (the compile) and transformers' warm-up call
are excluded.

bfloat16 and log-probs: the prefixes scored (and continued greedily) in float32, with bfloat16
weights (float32 activations) and in full bfloat16; differences against float32.

Server: `python -m phi4_jax.serve` in a subprocess; 32-token completions (temperature 1, a
fresh seed each) from one client at a time, then from 16 concurrent clients; throughput =
completion tokens / wall time, and the latency percentiles of the concurrent requests.

    JAX_PLATFORMS=cpu python bench/rollouts.py [--dtypes float32 bfloat16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from host import cpu_model  # bench/host.py: this folder is sys.path[0]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIXES, ROLLOUTS, NEW, PREFIX_LEN = 8, 16, 64, 200



def prefixes() -> list[list[int]]:
    """8 PTS-like prefixes of exactly PREFIX_LEN tokens: a CHAMP problem as a chat turn and the
    first steps of its reference solution."""
    import champ_dataset

    from phi4_jax.convert.gguf import GGUFTokenizer, smollm2_path

    tok = GGUFTokenizer(smollm2_path())
    path = os.path.join(os.path.dirname(champ_dataset.__file__), "dataset_files", "v0.json")
    with open(path, encoding="utf-8") as f:
        problems = list(json.load(f)["problems"].values())
    out = []
    for p in problems:
        chat = tok.render_chat([{"role": "user", "content": p["_text"]}])
        steps = " ".join(s["_text"] for s in p["solution"]["steps"])
        ids = tok.encode(chat + steps)
        if len(ids) >= PREFIX_LEN:
            out.append(ids[:PREFIX_LEN])
        if len(out) == PREFIXES:
            return out
    raise RuntimeError("not enough long CHAMP problems")


def _times(run, repeats: int, warm=None) -> dict:
    """The first call (or `warm`, a cheaper one) timed apart, then `repeats` timed calls."""
    start = time.perf_counter()
    (warm or run)()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"first": first, "times": times}


def worker_ours(dtype: str, repeats: int, batch_rows: int) -> dict:
    import phi4_jax
    from phi4_jax.convert.gguf import GGUFTokenizer, smollm2_path
    from phi4_jax.inference import packed
    from phi4_jax.inference.dtypes import with_dtypes
    from phi4_jax.inference.sampling import SamplingConfig
    from phi4_jax.posttrain.sampler import ModelSampler

    ids = prefixes()
    model = phi4_jax.load_gguf(smollm2_path(), dtype="float32")
    if dtype == "bfloat16":
        model = with_dtypes(model, dtype="bfloat16", param_dtype="bfloat16")
    elif dtype == "bf16-weights":
        model = with_dtypes(model, param_dtype="bfloat16")
    sampler = ModelSampler(model, GGUFTokenizer(smollm2_path()), max_new_tokens=NEW,
                           sampling=SamplingConfig(temperature=1.0), stop_tokens=(),
                           batch_rows=batch_rows, seed=0)
    out = _times(lambda: sampler.sample(ids, ROLLOUTS), repeats)
    out["packed"] = packed.supports(model, batch_rows)
    out["kernel"] = packed.uses_kernel(model.config)
    return out


def worker_hf(dtype: str, repeats: int, threads: int) -> dict:
    import torch
    import transformers

    from phi4_jax.convert.gguf import smollm2_path

    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    path = smollm2_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path),
        dtype=getattr(torch, "bfloat16" if dtype == "bfloat16" else "float32")).eval()
    ids = prefixes()
    kw = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=True, temperature=1.0,
              top_k=0, top_p=1.0, num_return_sequences=ROLLOUTS, pad_token_id=0)

    def per_prefix():
        with torch.no_grad():
            for p in ids:
                model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p),
                                                                            dtype=torch.long),
                               **kw)

    def all_at_once():  # every prefix has PREFIX_LEN tokens: no padding
        with torch.no_grad():
            x = torch.tensor(ids)
            model.generate(x, attention_mask=torch.ones_like(x), **kw)

    def warm():  # transformers needs no compile: one short call warms its kernels up
        with torch.no_grad():
            x = torch.tensor(ids[:2])
            model.generate(x, attention_mask=torch.ones_like(x), **{**kw, "max_new_tokens": 2,
                                                                    "min_new_tokens": 2})

    return {"per_prefix": _times(per_prefix, repeats, warm), "all": _times(all_at_once, repeats,
                                                                           warm)}


def _worker(args: argparse.Namespace, side: str, dtype: str) -> dict:
    repeats = args.repeats if side == "ours" else args.hf_repeats
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--dtype", dtype,
           "--repeats", str(repeats), "--batch_rows", str(args.batch_rows),
           "--torch_threads", str(args.torch_threads)]
    load = os.getloadavg()[0]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return {"load": load, **json.loads(done.stdout.strip().splitlines()[-1])}


def rollouts(args: argparse.Namespace) -> None:
    tokens = PREFIXES * ROLLOUTS * NEW
    print(f"## Rollouts: {PREFIXES} prefixes x {PREFIX_LEN} tokens, {ROLLOUTS} rollouts each, "
          f"{NEW} new tokens, temperature 1 (CPU: {cpu_model()}, {os.cpu_count()} cores)\n")
    header = ("dtype", "implementation", "load avg", "first run s", "median s",
              "rollout tokens/s", "ours / theirs")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    peers: dict[str, dict] = {}
    for dtype in args.dtypes:
        ours = _worker(args, "ours", dtype)
        ours_s = statistics.median(ours["times"])
        peer_dtype = "float32" if dtype == "bf16-weights" else dtype
        shown = peer_dtype in peers
        if not shown:
            peers[peer_dtype] = _worker(args, "hf", peer_dtype)
        theirs = peers[peer_dtype]
        best = min(("per_prefix", "all"), key=lambda k: statistics.median(theirs[k]["times"]))
        hf_s = statistics.median(theirs[best]["times"])
        path = "packed, CPU kernel" if ours["packed"] and ours["kernel"] else (
            "packed" if ours["packed"] else "scanned")
        print(f"| {dtype} | phi4_jax ModelSampler (shared prefill, {args.batch_rows} rows/call,"
              f" {path}) | {ours['load']:.1f} | {ours['first']:.1f} | {ours_s:.2f} | "
              f"{tokens / ours_s:.0f} | {hf_s / ours_s:.2f}x |")
        for k, label in () if shown else (("per_prefix", "16 rows/call"),
                                          ("all", "128 rows/call")):
            s = statistics.median(theirs[k]["times"])
            mark = " (faster)" if k == best else ""
            print(f"| {peer_dtype} | transformers generate(num_return_sequences=16), {label}"
                  f"{mark} | {theirs['load']:.1f} | {theirs[k]['first']:.1f} | {s:.2f} | "
                  f"{tokens / s:.0f} | |")
    print("\nours / theirs: the faster transformers timing over ours (same dtype; bf16-weights "
          "is ours with bfloat16 weights and float32 activations against float32 transformers)."
          " load avg: 1-minute load when each side started.\n")


def bf16_effect() -> None:
    """Log-probs of the 8 prefixes (1,592 scored tokens) and 32-token greedy continuations under
    bfloat16 weights (float32 activations) and full bfloat16, against float32."""
    import jax
    import numpy as np

    import phi4_jax
    from phi4_jax.convert.gguf import smollm2_path
    from phi4_jax.inference.decode import generate
    from phi4_jax.inference.dtypes import with_dtypes
    from phi4_jax.inference.scoring import token_logprobs

    ids = prefixes()
    base = phi4_jax.load_gguf(smollm2_path(), dtype="float32")
    variants = {"float32": base, "bf16 weights, f32 activations":
                with_dtypes(base, param_dtype="bfloat16"),
                "bfloat16 (weights and compute)": with_dtypes(base, dtype="bfloat16",
                                                              param_dtype="bfloat16")}
    ref = np.asarray(token_logprobs(base, ids))[:, 1:]
    greedy = np.asarray(generate(base, ids, max_new_tokens=32, stop_tokens=()).tokens)
    print("## bfloat16 and log-probs: 8 CHAMP prefixes x 199 scored tokens, 32 greedy tokens "
          "each\n")
    header = ("model", "mean abs d logprob", "p99 abs d logprob", "max abs d logprob",
              "mean abs d sum per prefix", "greedy tokens equal", "rows equal")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, model in variants.items():
        lp = np.asarray(token_logprobs(model, ids))[:, 1:]
        d = np.abs(lp - ref)
        out = np.asarray(generate(model, ids, max_new_tokens=32, stop_tokens=()).tokens)
        same = [int(np.argmax(a != b)) if (a != b).any() else a.size
                for a, b in zip(out, greedy)]
        print(f"| {name} | {d.mean():.4f} | {np.percentile(d, 99):.4f} | {d.max():.4f} | "
              f"{np.abs(lp.sum(1) - ref.sum(1)).mean():.3f} | "
              f"{sum(same)}/{out.size} (before the first difference) | "
              f"{sum(s == out.shape[1] for s in same)}/{len(same)} |")
        del model
    jax.clear_caches()
    print()


STORIES = ["Once upon a time, in a small village by the sea,", "The old lighthouse keeper said",
           "In the year 2150, the first city on Mars", "The recipe my grandmother left me",
           "Deep in the forest, a fox found", "The train stopped in the middle of nowhere and",
           "When the robot woke up, it", "The letter arrived forty years late, and"]


def _start_server(max_batch: int) -> tuple[subprocess.Popen, str]:
    import socket

    import httpx

    from phi4_jax.convert.gguf import smollm2_path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "phi4_jax.serve", f"--model={smollm2_path()}", f"--port={port}",
         "--served_model_name=smollm2", f"--max_batch={max_batch}", "--log_level=warning"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the server did not start")


async def _clients(url: str, clients: int, per_client: int, seed0: int) -> tuple[float, list]:
    """(wall s, [(latency s, completion tokens)]) of `clients` concurrent loops of requests."""
    import asyncio

    import httpx

    async def one(client, k: int, out: list) -> None:
        for r in range(per_client):
            body = {"model": "smollm2", "prompt": STORIES[(k + r) % len(STORIES)],
                    "max_tokens": 32, "temperature": 1.0, "seed": seed0 + k * 1000 + r}
            start = time.perf_counter()
            resp = await client.post(f"{url}/v1/completions", json=body)
            resp.raise_for_status()
            out.append((time.perf_counter() - start, resp.json()["usage"]["completion_tokens"]))

    out: list = []
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=1800, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(client, k, out) for k in range(clients)))
        return time.perf_counter() - start, out


def server_bench(clients: int, per_client: int) -> None:
    import asyncio

    import numpy as np

    proc, url = _start_server(max_batch=clients)
    try:
        # Warm-up: every wave shape the phases below meet (1 row; partial and full waves).
        asyncio.run(_clients(url, 1, 2, 0))
        asyncio.run(_clients(url, clients, 2, 10 ** 6))
        load_seq = os.getloadavg()[0]
        seq_wall, seq = asyncio.run(_clients(url, 1, max(4, per_client * 2), 2 * 10 ** 6))
        load_conc = os.getloadavg()[0]
        conc_wall, conc = asyncio.run(_clients(url, clients, per_client, 3 * 10 ** 6))
    finally:
        proc.terminate()
        proc.wait(300)
    rate = lambda wall, rows: sum(n for _, n in rows) / wall
    lat = lambda rows, q: float(np.percentile([t for t, _ in rows], q))
    print(f"## Server: 32-token completions, temperature 1 (CPU: {cpu_model()}, "
          f"{os.cpu_count()} cores; server --max_batch={clients})\n")
    header = ("clients", "requests", "load avg", "wall s", "completion tokens/s",
              "p50 latency s", "p99 latency s", "vs one client")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    one = rate(seq_wall, seq)
    for n, wall, rows, load in ((1, seq_wall, seq, load_seq),
                                (clients, conc_wall, conc, load_conc)):
        print(f"| {n} | {len(rows)} | {load:.1f} | {wall:.1f} | {rate(wall, rows):.1f} | "
              f"{lat(rows, 50):.2f} | {lat(rows, 99):.2f} | {rate(wall, rows) / one:.2f}x |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bf16-weights", "bfloat16"],
                        choices=["float32", "bfloat16", "bf16-weights"])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of ours")
    parser.add_argument("--hf_repeats", type=int, default=1, help="timed runs of transformers")
    parser.add_argument("--batch_rows", type=int, default=64)
    parser.add_argument("--torch_threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["rollouts", "server", "bf16_effect"])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=3, help="per client, concurrent phase")
    parser.add_argument("--worker", choices=["ours", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    if args.worker == "ours":
        print(json.dumps(worker_ours(args.dtype, args.repeats, args.batch_rows)))
        return
    if args.worker == "hf":
        print(json.dumps(worker_hf(args.dtype, args.repeats, args.torch_threads)))
        return
    if "bf16_effect" not in args.skip:
        bf16_effect()
    if "rollouts" not in args.skip:
        rollouts(args)
    if "server" not in args.skip:
        server_bench(args.clients, args.requests)


if __name__ == "__main__":
    main()
