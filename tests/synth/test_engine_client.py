"""The engine's client against a scripted HTTP server on 127.0.0.1 that injects failures:
every failure is retried or reported as specified, none is cached, and the output equals a
failure-free run's."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from phi4_jax import synth
from phi4_jax.synth.client import LLMClient, ModelConfig, retry_after_s
from tests.synth import engine_stages as es
from tests.synth.scripted_server import ScriptedServer

RETRYABLE = ["429", "500", "503", "timeout", "truncated", "drop", "no_choices"]


def _run(folder, server, out="out", **config):
    """Runs the test workflow (config and inputs in `folder`) into folder/out."""
    cfg = es.write_config(str(folder), server.url, **config)
    return synth.run_workflow(synth.load_workflow(cfg), str(folder / out), progress=False)


def _cache(output) -> dict:
    import sqlite3

    with sqlite3.connect(str(output / "cache.sqlite")) as db:
        return dict(db.execute("SELECT key, value FROM responses"))


def test_injected_failures_are_retried_never_cached_and_change_nothing(tmp_path):
    clean, faulty = tmp_path / "clean", tmp_path / "faulty"
    with ScriptedServer() as server:
        _run(tmp_path, server, "clean")
        clean_requests = server.generations
    # q1..q7: the answer request of each meets one kind of failure (two for q1), q9's vote
    # request (n=3 completions) is truncated then dropped.
    faults = {f"Q: what is {i} + {i}?": [kind] for i, kind in enumerate(RETRYABLE, 1)}
    faults["Q: what is 1 + 1?"] = ["429", "500"]
    faults["Vote on: what is 9 + 9?"] = ["truncated", "drop"]
    with ScriptedServer(faults=faults, slow_s=1.5) as server:
        result = _run(tmp_path, server, "faulty", timeout_s=0.5)
        served = sorted(kind for _, kind in server.served_faults)
        assert served == sorted(RETRYABLE + ["500", "truncated", "drop"])
        # every injected failure cost exactly one extra request
        assert server.generations == clean_requests + len(served)
    assert result.stats["answer"]["retries"] == len(RETRYABLE) + 1
    assert result.stats["vote"]["retries"] == 2
    assert all(s["failures"] == 0 for s in result.stats.values())
    assert es.tree(str(faulty)) == es.tree(str(clean))
    assert _cache(faulty) == _cache(clean)  # no failure was cached, nothing is missing


def test_a_4xx_is_reported_with_the_record_id_and_never_retried(tmp_path):
    with ScriptedServer(faults={"Q: what is 5 + 5?": ["400", "400"]}) as server:
        result = _run(tmp_path, server)
        attempts = [b for b in server.bodies
                    if b.get("messages", [{}])[-1].get("content") == "Q: what is 5 + 5?"]
    assert len(attempts) == 1
    with open(tmp_path / "out/stages/answer/shard-00001.rejects.jsonl") as f:
        rejects = [json.loads(x) for x in f]
    assert [(r["id"], r["reason"], r["where"]) for r in rejects] == [
        ("q5", "request_refused", "source/shard-00001.jsonl:2")]
    assert "record q5: HTTP 400" in rejects[0]["detail"]
    assert result.manifest["stages"]["answer"]["rejects"] == 1
    assert result.manifest["stages"]["answer"]["transient_failures"] == 0
    report = json.loads((tmp_path / "out/stages/answer/report.json").read_text())
    assert report["bad_by_reason"] == {"request_refused": 1}
    assert "q5" not in (tmp_path / "out/final.jsonl").read_text()


def test_exhausted_retries_are_rejected_then_asked_again_by_the_next_run(tmp_path):
    with ScriptedServer() as server:
        _run(tmp_path, server, "clean")
    with ScriptedServer(faults={"Q: what is 6 + 6?": ["500"] * 3}) as server:
        first = _run(tmp_path, server, max_retries=2)
        assert first.manifest["stages"]["answer"]["transient_failures"] == 1
        rejects = (tmp_path / "out/stages/answer/shard-00001.rejects.jsonl").read_text()
        assert '"reason":"request_failed"' in rejects and "3 attempts failed" in rejects
        before = server.generations
        second = _run(tmp_path, server, max_retries=2)  # the schedule is spent: q6 succeeds
        # only q6's answer (1 request) and the vote of its shard's records are asked again:
        # the other votes of shard 1 are cached, q6's vote is new.
        assert server.generations - before == 2
    assert second.manifest["stages"]["answer"]["transient_failures"] == 0
    assert es.tree(str(tmp_path / "out")) == es.tree(str(tmp_path / "clean"))


def test_retry_after_is_read_in_all_its_forms():
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after": "3"}) == 3.0
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after_s({"retry-after": date}) <= 30
    assert retry_after_s({}) is None


def test_429_waits_what_retry_after_asks():
    with ScriptedServer(faults={"slow down": ["429", "429"]}) as server:
        client = LLMClient(ModelConfig(model="scripted", base_url=server.url, revision=None,
                                       initial_backoff_s=5.0, max_backoff_s=5.0))
        start = time.perf_counter()
        out = asyncio.run(_chat(client, "slow down"))
        elapsed = time.perf_counter() - start
    assert out[0].text.startswith("scripted|slow down")
    # two waits of retry-after-ms: 20 each, not the 5 s backoff the config would give
    assert 0.04 <= elapsed < 2.0
    assert client.stats.retries == 2 and client.stats.requests == 3


async def _chat(client, text, n=1):
    try:
        return await client.chat([{"role": "user", "content": text}], n=n)
    finally:
        await client.aclose()


def test_concurrency_and_requests_per_minute_are_bounded():
    with ScriptedServer() as server:
        server.delay_s = 0.05
        client = LLMClient(ModelConfig(model="scripted", base_url=server.url, revision=None,
                                       concurrency=3))

        async def many():
            try:
                return await asyncio.gather(*[client.chat([{"role": "user", "content": str(i)}])
                                              for i in range(12)])
            finally:
                await client.aclose()

        asyncio.run(many())
        assert server.max_inflight == 3
        limited = LLMClient(ModelConfig(model="scripted", base_url=server.url, revision=None,
                                        rpm=600))  # one start per 0.1 s
        server.delay_s = 0.0

        async def paced():
            try:
                return await asyncio.gather(*[limited.chat([{"role": "user",
                                                            "content": f"r{i}"}])
                                              for i in range(6)])
            finally:
                await limited.aclose()

        start = time.perf_counter()
        asyncio.run(paced())
        assert time.perf_counter() - start >= 0.5  # 6 starts: 5 intervals of 0.1 s


def test_the_key_comes_from_the_named_variable_and_is_never_written(tmp_path, monkeypatch):
    secret = "sk-test-" + "7" * 24
    monkeypatch.setenv("SCRIPTED_KEY", secret)
    with ScriptedServer() as server:
        cfg = es.write_config(str(tmp_path), server.url, api_key_env="SCRIPTED_KEY")
        from phi4_jax.synth import run

        with pytest.raises(SystemExit) as exit_info:
            from phi4_jax import cli

            cli.run(run.main, [cfg, f"--output={tmp_path / 'out'}", "--quiet"])
        assert exit_info.value.code == 0
        assert set(server.keys) == {f"Bearer {secret}"}
    for dirpath, _, files in os.walk(tmp_path / "out"):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                assert secret.encode() not in f.read(), name
    assert secret not in repr(LLMClient(ModelConfig(model="m", api_key_env="SCRIPTED_KEY")))
    monkeypatch.delenv("SCRIPTED_KEY")
    with pytest.raises(ValueError, match="SCRIPTED_KEY"):
        LLMClient(ModelConfig(model="m", api_key_env="SCRIPTED_KEY"))


def test_samples_are_keyed_one_by_one_and_the_revision_is_in_the_key(tmp_path):
    cache = synth.ResponseCache(tmp_path / "c.sqlite")
    with ScriptedServer(revision="r1") as server:
        config = ModelConfig(model="scripted", base_url=server.url)

        def client(revision):
            return LLMClient(config, cache=cache, revision=revision)

        two = asyncio.run(_chat(client("r1"), "same", n=2))
        assert server.generations == 1 and [s.cached for s in two] == [False, False]
        four = asyncio.run(_chat(client("r1"), "same", n=4))  # 2 cached, 2 asked in 1 request
        assert server.generations == 2
        assert [s.cached for s in four] == [True, True, False, False]
        assert [s.text for s in four[:2]] == [s.text for s in two]
        asyncio.run(_chat(client("r2"), "same", n=1))  # another revision: another key
        assert server.generations == 3
        assert server.bodies[1]["n"] == 2 and "n" not in server.bodies[2]
        # the revision a run keys on is the one the server reports
        from phi4_jax.synth.client import server_revision

        assert asyncio.run(server_revision(config)) == "r1"
