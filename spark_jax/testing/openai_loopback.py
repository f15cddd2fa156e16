"""A programmable OpenAI-compatible chat server on 127.0.0.1, for tests and benchmarks.

It implements ``POST /v1/chat/completions`` and nothing else. Each request takes the next
:class:`Behaviour` from a script (a queue) or, once the script is empty, from ``default`` (a
callable of the request body). It records every request it received (body, headers, arrival
time) and the largest number of requests it served at the same time, so tests can assert
what the client sent, how often and how fast. Runs in a daemon thread; use as a context
manager so the socket is closed.
"""

from __future__ import annotations

import collections
import dataclasses
import email.utils
import http.server
import json
import socket
import threading
import time
from typing import Any, Callable, Iterable, Mapping


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """What the server does with one request.

    ``status`` 200 sends a chat completion whose message content is ``content`` (a string sent
    verbatim, or a mapping that is JSON-encoded); other statuses send ``body`` as the error.
    ``delay_s`` is slept before answering (longer than the client's timeout simulates a hang).
    """

    status: int = 200
    content: str | Mapping[str, Any] | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    body: Mapping[str, Any] | None = None
    delay_s: float = 0.0
    prompt_tokens: int = 100
    completion_tokens: int = 20
    finish_reason: str = "stop"


def ok(content: str | Mapping[str, Any], **kw: Any) -> Behaviour:
    return Behaviour(status=200, content=content, **kw)


def rate_limited(retry_after: str | float | None = None, **kw: Any) -> Behaviour:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return Behaviour(status=429, headers=headers,
                     body={"error": {"message": "rate limited", "type": "rate_limit_exceeded"}}, **kw)


def server_error(status: int = 500, **kw: Any) -> Behaviour:
    return Behaviour(status=status, body={"error": {"message": "boom", "type": "server_error"}}, **kw)


def hang(delay_s: float) -> Behaviour:
    """Answers validly, but only after ``delay_s`` (set it longer than the client timeout)."""
    return Behaviour(status=200, content="{}", delay_s=delay_s)


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


def valid_scores_reply(body: Mapping[str, Any], score: int = 7) -> Behaviour:
    """A valid judge reply for the schema the request carried (every required key gets ``score``)."""
    try:
        schema = body["response_format"]["json_schema"]["schema"]
        keys = schema["properties"]["scores"]["required"]
    except (KeyError, TypeError):
        return ok("plain text reply")
    return ok({"scores": {k: score for k in keys}})


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog is fixed when the socket opens: the default (5) refuses connections
    # when dozens of clients connect at once.
    request_queue_size = 256


@dataclasses.dataclass
class RecordedRequest:
    body: dict[str, Any]
    headers: dict[str, str]
    arrived_s: float  # time.monotonic() at arrival


class LoopbackOpenAIServer:
    """``with LoopbackOpenAIServer() as srv: AsyncOpenAI(base_url=srv.base_url, ...)``."""

    def __init__(
        self,
        *,
        default: Callable[[Mapping[str, Any]], Behaviour] = valid_scores_reply,
        latency_s: float = 0.0,
    ):
        self.default = default
        self.latency_s = latency_s  # added to every request, on top of a behaviour's delay
        self.requests: list[RecordedRequest] = []
        self.max_in_flight = 0
        self._script: collections.deque[Behaviour] = collections.deque()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- programming ----------------------------------------------------------------------

    def script(self, behaviours: Iterable[Behaviour]) -> None:
        """Queues behaviours for the next requests, in order; afterwards ``default`` answers."""
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.max_in_flight = 0

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> "LoopbackOpenAIServer":
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects
            # Headers and body go out in two writes; with Nagle on, delayed ACKs add ~40 ms.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                server._handle(self)

        httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="loopback-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "LoopbackOpenAIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- request handling -----------------------------------------------------------------

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        arrived = time.monotonic()
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        if h.path.rstrip("/") != "/v1/chat/completions":
            self._send(h, 404, {"error": {"message": f"no route {h.path}", "type": "not_found"}}, {})
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send(h, 400, {"error": {"message": "body is not JSON", "type": "invalid_request"}}, {})
            return
        with self._lock:
            self.requests.append(RecordedRequest(body, dict(h.headers.items()), arrived))
            behaviour = self._script.popleft() if self._script else None
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if behaviour is None:
                behaviour = self.default(body)
            wait = self.latency_s + behaviour.delay_s
            if wait > 0:
                time.sleep(wait)
            if behaviour.status != 200:
                self._send(h, behaviour.status, behaviour.body or {"error": {"message": "error"}},
                           behaviour.headers)
                return
            content = behaviour.content
            if not isinstance(content, str):
                content = json.dumps(content)
            reply = {
                "id": f"chatcmpl-loopback-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "unknown"),
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": behaviour.finish_reason,
                }],
                "usage": {
                    "prompt_tokens": behaviour.prompt_tokens,
                    "completion_tokens": behaviour.completion_tokens,
                    "total_tokens": behaviour.prompt_tokens + behaviour.completion_tokens,
                },
            }
            self._send(h, 200, reply, behaviour.headers)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass  # the client gave up (timeout test); nothing to answer
        finally:
            with self._lock:
                self._in_flight -= 1

    @staticmethod
    def _send(h: http.server.BaseHTTPRequestHandler, status: int, payload: Any,
              headers: Mapping[str, str]) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()
