"""The data-workflow engine against a bare asyncio loop of the `openai` client, same run.

A scripted OpenAI-compatible server (tests/synth/scripted_server.py, its own process, replies
that cost nothing) answers N short chat requests (one per record, max_tokens 8, temperature 0).

- bare: `openai.AsyncOpenAI(max_retries=0)`, an asyncio.Semaphore of C, N `chat.completions
  .create` calls gathered -- the ceiling for this client and server on this machine;
- engine: `phi4_jax.synth.run_workflow` in-process on a one-stage workflow (a chat template
  stage) with concurrency C: sharding, the SQLite cache lookups and writes, retries armed,
  shards, markers and manifest written, progress bars off;
- cached: the same workflow again with its stage outputs deleted and the cache kept (every reply
  from the cache, zero requests), and a rerun of the finished workflow (everything skipped);
- beam: the workflow on Beam's local runner (FnApiRunner, what DirectRunner runs offline) with a
  fresh cache, against a fresh in-process run of the same record count; overhead per record =
  (beam wall - in-process wall) / records.

bare and engine alternate (--repeats pairs); the ratio is median engine req/s over median bare
req/s. Prints a table with the CPU model and the load average.

    python bench/engine.py [--records 10000] [--concurrency 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from host import cpu_model  # bench/host.py: this folder is sys.path[0]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from phi4_jax import synth  # noqa: E402


def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.synth.scripted_server"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


async def bare(url: str, n: int, concurrency: int, tag: str) -> float:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with sem:
            r = await client.chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": f"Q: {tag} {i}"}],
                max_tokens=8, temperature=0.0)
            return r.choices[0].message.content

    start = time.perf_counter()
    out = await asyncio.gather(*[one(i) for i in range(n)])
    elapsed = time.perf_counter() - start
    await client.close()
    assert len(out) == n
    return elapsed


def workflow(folder: str, url: str, n: int, concurrency: int, tag: str,
             shard_size: int) -> synth.Workflow:
    path = os.path.join(folder, f"in-{tag}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "question": f"{tag} {i}"}) + "\n")
    stage = synth.llm_stage("ask", kind="chat", template="Q: ${question}", model="m",
                            sampling={"max_tokens": 8, "temperature": 0.0})
    return synth.Workflow(name="bench", inputs=[path], stages=[stage], shard_size=shard_size,
                          models={"m": synth.ModelConfig(model="scripted", base_url=url,
                                                         revision=None,
                                                         concurrency=concurrency)})


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shard_size", type=int, default=500)
    parser.add_argument("--beam_records", type=int, default=None,
                        help="records of the Beam comparison (default: --records)")
    args = parser.parse_args()
    n, c = args.records, args.concurrency
    proc, url = start_server()
    folder = tempfile.mkdtemp(prefix="bench-engine-")
    rows, bare_times, engine_times = [], [], []
    try:
        asyncio.run(bare(url, 200, c, "warm"))
        for rep in range(args.repeats):
            bare_times.append(asyncio.run(bare(url, n, c, f"bare{rep}")))
            wf = workflow(folder, url, n, c, f"eng{rep}", args.shard_size)
            out = os.path.join(folder, f"engine{rep}")
            t, result = timed(lambda wf=wf, out=out: synth.run_workflow(wf, out, progress=False))
            assert result.stats["ask"]["requests"] == n, result.stats
            engine_times.append(t)
        b, e = statistics.median(bare_times), statistics.median(engine_times)
        rows.append(("bare openai asyncio loop", f"{n / b:,.0f} req/s", f"{b:.2f} s"))
        rows.append(("engine, in-process", f"{n / e:,.0f} req/s", f"{e:.2f} s"))
        rows.append(("engine / bare", f"{b / e:.2f}x", "target >= 0.90x"))
        shutil.rmtree(os.path.join(out, "stages"))
        os.remove(os.path.join(out, "manifest.json"))
        t, again = timed(lambda: synth.run_workflow(wf, out, progress=False))
        assert again.stats["ask"]["requests"] == 0 and again.stats["ask"]["cache_hits"] == n
        rows.append(("cached re-run (outputs deleted, cache kept)", "0 requests", f"{t:.2f} s"))
        t, again = timed(lambda: synth.run_workflow(wf, out, progress=False))
        assert again.stats["ask"]["shards_run"] == 0
        rows.append(("re-run of the finished workflow", "0 requests", f"{t:.2f} s"))
        m = args.beam_records or n
        wf_local = workflow(folder, url, m, c, "local", args.shard_size)
        wf_beam = workflow(folder, url, m, c, "beam", args.shard_size)
        t_local, _ = timed(lambda: synth.run_workflow(wf_local, os.path.join(folder, "l"),
                                                      progress=False))
        t_beam, beam = timed(lambda: synth.run_workflow(wf_beam, os.path.join(folder, "b"),
                                                        runner="FnApiRunner", progress=False))
        assert beam.stats["all"]["requests"] == m, beam.stats
        rows.append((f"in-process, {m:,} records", f"{m / t_local:,.0f} rec/s", f"{t_local:.2f} s"))
        rows.append((f"Beam FnApiRunner, {m:,} records", f"{m / t_beam:,.0f} rec/s",
                     f"{t_beam:.2f} s"))
        rows.append(("Beam overhead per record", f"{(t_beam - t_local) / m * 1e3:.3f} ms", ""))
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
    load = os.getloadavg()
    print(f"\nbench/engine.py: {n:,} requests, concurrency {c}, shard_size {args.shard_size}, "
          f"{args.repeats} alternating repeats (medians)")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}")
    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {'throughput':>14}  {'wall':>16}")
    for name, rate, wall in rows:
        print(f"{name:<{width}}  {rate:>14}  {wall:>16}")
    print("bare runs: " + ", ".join(f"{n / t:,.0f}" for t in bare_times)
          + " req/s; engine runs: " + ", ".join(f"{n / t:,.0f}" for t in engine_times) + " req/s")


if __name__ == "__main__":
    main()
