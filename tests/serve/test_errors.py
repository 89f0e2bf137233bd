"""Bad input and overload, end to end on 127.0.0.1: each case's status code, param and message.

One server (SmolLM2-135M, max_batch=2, max_queue=1). Validation failures never reach the model,
so only the overload tests decode (a long request keeps the one wave busy).
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from tests.serve.conftest import serve

pytestmark = pytest.mark.slow

GOOD = {"model": "smollm2", "prompt": "Hello", "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def url(smollm2):
    with serve(smollm2, max_batch=2, max_queue=1, segment=4) as base:
        yield base


def _error(response: httpx.Response, status: int, param, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param, err
    for f in fragments:
        assert f in err["message"], (f, err["message"])
    return err


@pytest.mark.parametrize("change, param, fragments", [
    ({"temperature": "hot"}, "temperature", ["valid number"]),
    ({"temperature": 2.5}, "temperature", ["less than or equal to 2"]),
    ({"top_p": 0}, "top_p", ["greater than 0"]),
    ({"n": 0}, "n", ["greater than or equal to 1"]),
    ({"n": 3}, "n", ["at most 2 samples"]),
    ({"max_tokens": -1}, "max_tokens", ["greater than or equal to 0"]),
    ({"max_tokens": 9000}, "max_tokens", ["maximum context length is 8192"]),
    ({"logprobs": 6}, "logprobs", ["less than or equal to 5"]),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", ["at most 4"]),
    ({"stop": 3}, "stop", ["a string or a list of strings"]),
    ({"prompt": []}, "prompt", ["empty list"]),
    ({"prompt": [1, "a"]}, "prompt", ["list of token ids"]),
    ({"prompt": [5, 60000]}, "prompt", ["outside the vocabulary"]),
    ({"echo": "yes"}, "echo", ["valid boolean"]),
    ({"seed": 1.5}, "seed", ["valid integer"]),
    ({"frequency_penalty": 0.5}, "frequency_penalty", ["not supported"]),
    ({"best_of": 3}, "best_of", ["not supported"]),
    ({"colour": "blue"}, "colour", ["Unrecognized request argument supplied: colour"]),
], ids=lambda x: str(x)[:40])
def test_completions_bad_fields_are_400_naming_the_field(url, change, param, fragments):
    err = _error(httpx.post(f"{url}/v1/completions", json={**GOOD, **change}), 400, param,
                 *fragments)
    assert err["type"] == "invalid_request_error"
    if param == "max_tokens" and "context" in fragments[0]:
        assert err["code"] == "context_length_exceeded"


def test_malformed_bodies_are_400(url):
    _error(httpx.post(f"{url}/v1/completions", content=b"{not json"), 400, None,
           "could not parse the JSON body")
    _error(httpx.post(f"{url}/v1/completions", json=[1, 2]), 400, None, "JSON object")
    missing = {k: v for k, v in GOOD.items() if k != "prompt"}
    _error(httpx.post(f"{url}/v1/completions", json=missing), 400, "prompt",
           "Missing required parameter: prompt")


def test_unknown_model_is_404(url):
    err = _error(httpx.post(f"{url}/v1/completions", json={**GOOD, "model": "gpt-9"}), 404,
                 "model", "`gpt-9` does not exist")
    assert err["code"] == "model_not_found"


@pytest.mark.parametrize("change, param, fragment", [
    ({"messages": []}, "messages", "must not be empty"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", "not supported"),
    ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content",
     "a string or a list of text parts"),
    ({"messages": [{"role": "user"}, {"content": "x"}]}, "messages[1].role",
     "Missing required parameter"),
    ({"top_logprobs": 2}, "top_logprobs", "needs logprobs: true"),
    ({"logprobs": True, "top_logprobs": 9}, "top_logprobs", "at most 5"),
    ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
    ({"tools": [{"type": "function"}]}, "tools", "not supported"),
    ({"continue_final_message": True}, "add_generation_prompt", "needs add_generation_prompt"),
    ({"add_generation_prompt": False}, "add_generation_prompt", "only with continue_final"),
    ({"continue_final_message": True, "add_generation_prompt": False}, "continue_final_message",
     "must be the assistant's"),
], ids=lambda x: str(x)[:40])
def test_chat_bad_fields_are_400_naming_the_field(url, change, param, fragment):
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], **change}
    _error(httpx.post(f"{url}/v1/chat/completions", json=body), 400, param, fragment)


def test_unknown_routes_and_methods_are_error_objects(url):
    _error(httpx.get(f"{url}/v1/nothing"), 404, None, "Not Found")
    _error(httpx.get(f"{url}/v1/completions"), 405, None, "Method Not Allowed")


def _wait(predicate, timeout=600.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _raw_post(url: str, path: str, body: dict) -> socket.socket:
    """Sends a POST on a bare socket and returns it (closing it is a client disconnect)."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def test_full_queue_is_429_and_a_disconnect_frees_its_rows(url):
    health = lambda: httpx.get(f"{url}/health").json()
    long_body = {**GOOD, "prompt": "Once upon a time", "max_tokens": 4000,
                 "stop": ["never-appears"]}
    sock = _raw_post(url, "/v1/completions", long_body)
    _wait(lambda: health()["running_rows"] == 1)  # the one wave is busy
    queued: dict[str, httpx.Response] = {}
    waiter = threading.Thread(target=lambda: queued.setdefault(
        "r", httpx.post(f"{url}/v1/completions", json=GOOD, timeout=600)), daemon=True)
    waiter.start()
    _wait(lambda: health()["queued_requests"] == 1)  # max_queue reached
    over = httpx.post(f"{url}/v1/completions", json=GOOD)
    err = _error(over, 429, None, "queue is full")
    assert err["code"] == "queue_full" and err["type"] == "rate_limit_error"
    assert int(over.headers["Retry-After"]) >= 1
    # The long request's client goes away: its row stops at the next segment and the queued
    # request runs next, long before 4000 tokens could have been generated.
    sock.close()
    _wait(lambda: health()["queued_requests"] == 0, 30)  # the long wave ended early
    waiter.join(600)
    assert queued["r"].status_code == 200, queued["r"].text
    _wait(lambda: health()["running_rows"] == 0, 60)
