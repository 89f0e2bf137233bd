"""A scripted OpenAI-compatible server on 127.0.0.1 that injects failures on a schedule.

    with ScriptedServer(faults={"q3": ["429", "500"], "q5": ["drop"]}) as server:
        ...  # point a client at server.url; server.generations counts POST requests

/v1/chat/completions and /v1/completions answer with `reply(body, index)` (default: an echo of
the request that is a pure function of it), one choice per `n`; GET /v1/models lists the
model with `revision` when one is given. HTTP/1.1 with keep-alive, a thread per connection.

Faults are keyed by the start of the request's text: the k-th attempt of a request whose last
message (or prompt) begins with KEY gets faults[KEY][k-1], attempts past the list succeed:
'429' (with retry-after-ms: 20), '500', '503', '400', 'timeout' (answers after `slow_s`),
'truncated' (a complete HTTP reply whose JSON body is cut in half), 'drop' (the connection
closed with no reply), 'no_choices' (200 with an empty choice list). Every fault served is
appended to `served_faults`.

    python -m tests.synth.scripted_server --port=0   # prints its URL, serves until killed
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[dict, int], str]


def request_text(body: Mapping[str, Any]) -> str:
    if "messages" in body:
        return str(body["messages"][-1].get("content", ""))
    return str(body.get("prompt", ""))


def echo(body: dict, index: int) -> str:
    """A reply that is a pure function of the request and the choice index."""
    params = {k: body.get(k) for k in ("temperature", "seed", "max_tokens", "top_p")}
    return f"{body.get('model')}|{request_text(body)}|{json.dumps(params, sort_keys=True)}|{index}"


class ScriptedServer:
    def __init__(self, *, reply: Reply = echo, faults: Mapping[str, Sequence[str]] | None = None,
                 revision: str | None = None, slow_s: float = 1.0, model: str = "scripted"):
        self.reply, self.faults = reply, {k: list(v) for k, v in (faults or {}).items()}
        self.revision, self.slow_s, self.model = revision, slow_s, model
        self.lock = threading.Lock()
        self.generations = 0  # POSTs to a completion endpoint, faults included
        self.gets = 0
        self.attempts: collections.Counter = collections.Counter()
        self.served_faults: list[tuple[str, str]] = []
        self.bodies: list[dict] = []
        self.keys: list[str | None] = []  # Authorization headers
        self.keep_bodies = True
        self.delay_s = 0.0  # every generation waits this long (to observe concurrency)
        self.inflight = self.max_inflight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, payload: bytes, headers: Mapping[str, str] = ()):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in dict(headers).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):  # noqa: N802
                with server.lock:
                    server.gets += 1
                entry = {"id": server.model, "object": "model", "created": 0, "owned_by": "t"}
                if server.revision is not None:
                    entry["revision"] = server.revision
                self._send(200, json.dumps({"object": "list", "data": [entry]}).encode())

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fault = server._fault(body, self.headers.get("Authorization"))
                with server.lock:
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                try:
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    if fault == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if fault == "timeout":
                        time.sleep(server.slow_s)
                    if fault in ("429", "500", "503", "400"):
                        error = {"error": {"message": f"injected {fault}", "type": "x"}}
                        self._send(int(fault), json.dumps(error).encode(),
                                   {"retry-after-ms": "20"} if fault == "429" else {})
                        return
                    payload = json.dumps(server.completion(body, empty=fault == "no_choices"))
                    data = payload.encode()
                    self._send(200, data[:len(data) // 2] if fault == "truncated" else data)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True
                finally:
                    with server.lock:
                        server.inflight -= 1

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _fault(self, body: dict, authorization: str | None = None) -> str | None:
        text = request_text(body)
        key = json.dumps(body, sort_keys=True)
        with self.lock:
            self.generations += 1
            if self.keep_bodies:
                self.bodies.append(body)
                self.keys.append(authorization)
            self.attempts[key] += 1
            attempt = self.attempts[key]
            for trigger, kinds in self.faults.items():
                if text.startswith(trigger) and attempt <= len(kinds):
                    self.served_faults.append((trigger, kinds[attempt - 1]))
                    return kinds[attempt - 1]
        return None

    def completion(self, body: dict, *, empty: bool = False) -> dict:
        n = int(body.get("n") or 1)
        chat = "messages" in body
        choices = [] if empty else [
            {"index": i, "finish_reason": "stop",
             **({"message": {"role": "assistant", "content": self.reply(body, i)}} if chat
                else {"text": self.reply(body, i), "logprobs": None})} for i in range(n)]
        return {"id": "cmpl-1", "object": "chat.completion" if chat else "text_completion",
                "created": 0, "model": body.get("model", ""), "choices": choices,
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ScriptedServer()
    server.keep_bodies = False
    if args.port:
        server.httpd.server_close()
        server.httpd = type(server.httpd)(("127.0.0.1", args.port),
                                          server.httpd.RequestHandlerClass)
    print(server.url, flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
