"""The response cache: what the key covers, several writer processes at once, kill -9."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from phi4_jax.synth.cache import ResponseCache, canonical_json, request_key

BASE = dict(model="m", revision=None, endpoint="chat",
            request={"messages": [{"role": "user", "content": "hi"}]},
            params={"temperature": 0.7, "seed": 1, "max_tokens": 8}, sample=0)


def test_the_key_covers_every_part_of_the_request():
    key = request_key(**BASE)
    assert key == request_key(**{**BASE, "params": {"max_tokens": 8, "seed": 1,
                                                    "temperature": 0.7}})  # order-free
    changed = [{"model": "m2"}, {"revision": "r1"}, {"endpoint": "completions"},
               {"request": {"messages": [{"role": "user", "content": "hi!"}]}},
               {"params": {**BASE["params"], "seed": 2}},
               {"params": {**BASE["params"], "temperature": 0.71}},
               {"params": {**BASE["params"], "top_p": 0.9}}, {"sample": 1}]
    keys = {request_key(**{**BASE, **c}) for c in changed}
    assert len(keys) == len(changed) and key not in keys
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def _writer(path: str, worker: int, n: int) -> None:
    cache = ResponseCache(path)
    for i in range(n):
        cache.put_many({f"{worker}-{i}": {"text": f"reply {worker} {i}", "finish_reason": "stop"},
                        f"shared-{i}": {"text": f"shared {i}", "finish_reason": "stop"}})
        assert cache.get_many([f"{worker}-{i}"])[f"{worker}-{i}"]["text"] == f"reply {worker} {i}"


def test_several_processes_write_one_cache(tmp_path):
    path = str(tmp_path / "cache.sqlite")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 150)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = ResponseCache(path)
    assert len(cache) == 3 * 150 + 150
    got = cache.get_many([f"{w}-{i}" for w in range(3) for i in range(150)])
    assert len(got) == 450 and got["2-149"]["text"] == "reply 2 149"


_KILLED_WRITER = """
import sys
from phi4_jax.synth.cache import ResponseCache
cache = ResponseCache(sys.argv[1])
i = 0
while True:
    cache.put_many({f"k{i}-{j}": {"text": "x" * 2000, "n": i} for j in range(20)})
    i += 1
    if i == 5:
        print("writing", flush=True)
"""


def test_kill_9_in_the_middle_of_writes_leaves_a_readable_cache(tmp_path):
    path = str(tmp_path / "cache.sqlite")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, path], stdout=subprocess.PIPE,
                            text=True, cwd=os.path.dirname(os.path.dirname(
                                os.path.dirname(os.path.abspath(__file__)))))
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cache = ResponseCache(path)
    n = len(cache)
    assert n >= 100 and n % 20 == 0  # whole transactions only
    batches = {v["n"] for v in cache.get_many([f"k{i}-0" for i in range(n // 20)]).values()}
    assert batches == set(range(n // 20))
    cache.put_many({"after": {"text": "ok"}})  # and it takes writes again
    assert cache.get_many(["after"]) == {"after": {"text": "ok"}}


def test_group_commits_from_many_coroutines_are_all_durable(tmp_path):
    import asyncio

    path = str(tmp_path / "cache.sqlite")
    cache = ResponseCache(path)

    async def put(i):
        await cache.aput_many({f"k{i}": {"text": str(i)}})
        return i

    async def main():
        return await asyncio.gather(*[put(i) for i in range(300)])

    assert asyncio.run(main()) == list(range(300))
    cache.close()
    fresh = ResponseCache(path)  # another connection sees every committed entry
    assert len(fresh) == 300 and fresh.get_many(["k299"]) == {"k299": {"text": "299"}}
