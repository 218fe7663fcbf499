"""Real loopback HTTP servers for tests: OpenAI chat completions with or without logprobs (judges), and static files
(URLs)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Reply = tuple[int, bytes]


def completion(top: list[tuple[str, float]]) -> Reply:
    """A 200 chat-completions body whose single output token has these (token, probability) top logprobs."""
    entries = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in top]
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "judge-test",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": top[0][0]},
                "logprobs": {
                    "content": [{"token": top[0][0], "logprob": entries[0]["logprob"], "top_logprobs": entries}]
                },
                "finish_reason": "length",
            }
        ],
    }
    return 200, json.dumps(body).encode()


def text_completion(text: str) -> Reply:
    """A 200 chat-completions body replying `text` with no logprobs, as servers that do not return them answer."""
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "judge-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": "stop"}],
    }
    return 200, json.dumps(body).encode()


@dataclass
class FakeEndpoint:
    """State of the loopback server: what it answers (`reply(body)`) and every request it received."""

    url: str
    reply: Callable[[dict[str, Any]], Reply]
    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def serve(reply: Callable[[dict[str, Any]], Reply]) -> Iterator[FakeEndpoint]:
    """A ThreadingHTTPServer on 127.0.0.1:<free port> serving POST /v1/chat/completions with `reply`."""
    state = FakeEndpoint(url="", reply=reply)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                body = json.loads(raw)
                with state.lock:
                    state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                time.sleep(state.delay)
                status, payload = state.reply(body) if self.path == "/v1/chat/completions" else (404, b"{}")
            finally:
                with state.lock:
                    state.in_flight -= 1
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve_files(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """`directory` over HTTP on 127.0.0.1:<free port>: (base URL, the path of every GET request so far)."""
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
