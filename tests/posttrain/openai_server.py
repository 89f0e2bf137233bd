"""A scripted OpenAI-compatible chat server on 127.0.0.1, so tests exercise the real `openai`
client over HTTP (status codes, retries, JSON bodies), with no network and no fastapi."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# respond(request body) -> (HTTP status, content): one choice finished with "stop", or a list of
# (content, finish_reason) choices; on an error status the content is the error message.
Respond = Callable[[dict], tuple[int, "str | Sequence[tuple[str, str]]"]]


def completion(choices: Sequence[tuple[str, str]], model: str = "scripted") -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": i, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content}}
                        for i, (content, finish) in enumerate(choices)],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class ScriptedServer:
    """/v1/chat/completions answered by `respond`; every request body is kept in `requests`
    (and its Authorization header in `keys`)."""

    def __init__(self, respond: Respond):
        self.respond, self.requests, self.keys = respond, [], []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.keys.append(self.headers.get("Authorization"))
                status, content = server.respond(body)
                choices = [(content, "stop")] if isinstance(content, str) else content
                payload = json.dumps(completion(choices, body.get("model", "")) if status == 200
                                     else {"error": {"message": content, "type": "server_error"}})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("retry-after-ms", "1")  # keep the client's backoff short
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def scripted(replies: list[tuple[int, str]]) -> Respond:
    """Answers requests with `replies` in order."""
    it = iter(replies)
    return lambda body: next(it)
