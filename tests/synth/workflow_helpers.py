"""Running the workflows of workflows/ against the scripted HTTP server in tests.

    with ScriptedServer(reply=by_system({"You rate": score_reply})) as server:
        result = run_config("seed_curation", tmp_path, server, pages, "threshold=3")
        rejected(result, "scored")        # {id: reason}
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from phi4_jax.synth import run_workflow
from phi4_jax.synth.workflow import load_workflow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def messages(body: Mapping[str, Any]) -> tuple[str, str]:
    """(system, last user message) of a chat request body."""
    msgs = body.get("messages", [])
    system = next((m["content"] for m in msgs if m["role"] == "system"), "")
    return system, msgs[-1]["content"] if msgs else body.get("prompt", "")


def by_system(routes: Mapping[str, Callable[[str, int, dict], str]]) -> Callable[[dict, int], str]:
    """A ScriptedServer reply: the route whose key starts the system message answers
    (user text, sample index, body)."""
    def reply(body: dict, index: int) -> str:
        system, user = messages(body)
        for prefix, fn in routes.items():
            if system.startswith(prefix):
                return fn(user, index, body)
        raise AssertionError(f"no scripted route for system message {system[:60]!r}")
    return reply


def write_jsonl(path: str, records: Iterable[Mapping[str, Any]]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def config_arg(server: Any, inputs: str, extra: str = "") -> str:
    arg = (f"base_url={server.url},model=scripted,api_key_env=none,rpm=0,revision=none,"
           f"max_retries=2,inputs={inputs}") if server is not None else f"inputs={inputs}"
    return f"{arg},{extra}" if extra else arg


def run_config(name: str, tmp_path: Any, server: Any, records: Iterable[Mapping[str, Any]],
               extra: str = "") -> Any:
    """Runs workflows/NAME.py over `records` against `server` (None: a workflow without
    models); the output is tmp_path/NAME."""
    inputs = write_jsonl(os.path.join(tmp_path, f"{name}.jsonl"), records)
    workflow = load_workflow(os.path.join(ROOT, "workflows", f"{name}.py") + ":"
                             + config_arg(server, inputs, extra))
    return run_workflow(workflow, os.path.join(tmp_path, name), progress=False)


def rejected(result: Any, stage: str) -> dict[str, str]:
    """{record id: reject reason} of a stage."""
    out = {}
    folder = os.path.join(result.output, "stages", stage)
    for name in sorted(os.listdir(folder)):
        if name.endswith(".rejects.jsonl"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                for line in f:
                    r = json.loads(line)
                    out[r["id"]] = r["reason"]
    return out


def kept(result: Any, stage: str) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in result.records(stage)}
