"""A real, local OpenAI-compatible HTTP server for tests, with scripted faults.

``FakeOpenAI`` runs the standard library's ``ThreadingHTTPServer`` on 127.0.0.1, port 0 (a free
port), in a background thread, so clients talk real HTTP over a real socket: connection pooling,
timeouts, status codes and broken bodies behave as they do against vLLM or a hosted API.

Served: ``POST /v1/chat/completions`` and ``GET /v1/models``. A normal reply's assistant content
comes from ``reply(body)``, a function of the parsed request body (a ``str``, repeated for each of
the ``n`` choices, or a list of ``n`` strings). Every request is recorded (thread-safe) with its
body, so tests can count requests in total and per distinct body.

Faults are scripted per request by ``faults``: a list indexed by the request's arrival number, or a
callable ``faults(n, body, attempt)`` where ``attempt`` counts earlier requests with the same body
(0 for the first), which stays deterministic under concurrent clients. An action is ``None``/"ok"
(normal reply), "429" (with ``Retry-After: 0``), "500", "503", any other status code as a string
("401", "404", ...), "timeout" (stall ``stall`` seconds, longer than the client's timeout, then
reply), "malformed" (200 with the body ``{not json``), "no_choices" (200, JSON without
``choices``), "empty" (200, empty content), "close" (drop the connection without a reply), or a
dict ``{"status": int, "body": str | dict, "headers": {...}, "delay": seconds}``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


def closed_port() -> int:
    """A local port that nothing listens on (bound, then closed): connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_url() -> str:
    return f"http://127.0.0.1:{closed_port()}/v1"


def _last_user_text(body: dict) -> str:
    msgs = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    content = msgs[-1].get("content", "") if msgs else ""
    return content if isinstance(content, str) else json.dumps(content)


def body_key(body: Any) -> str:
    """A canonical string for a request body, to count requests per distinct body."""
    return json.dumps(body, sort_keys=True, ensure_ascii=False)


class FakeOpenAI:
    """``with FakeOpenAI(reply=..., faults=...) as srv:`` ... ``srv.url`` is ``http://127.0.0.1:PORT/v1``."""

    def __init__(self, reply: Callable[[dict], str | list[str]] | None = None,
                 faults: list | Callable[[int, dict, int], Any] | None = None, latency: float = 0.0,
                 stall: float = 2.0, models: tuple[str, ...] = ("judge",)):
        self.reply = reply or _last_user_text
        self.faults = faults
        self.latency = latency          # seconds before every normal reply
        self.stall = stall              # seconds a "timeout" fault waits before replying
        self.models = models
        self.lock = threading.Lock()
        self.requests: list[Any] = []   # parsed bodies (raw text when not JSON), in arrival order
        self.headers: list[dict] = []   # request headers (lower-case names), same order
        self.answered: list[Any] = []   # bodies that got a complete 200 chat reply
        self.inflight = 0
        self.max_inflight = 0
        self._per_body: Counter = Counter()
        self._conns: set[socket.socket] = set()   # open client connections, dropped by stop()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "FakeOpenAI":
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False     # a stalled handler must not delay shutdown
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open (keep-alive) connection: from now on clients get
        'connection refused', as from a server that went down."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- inspection ------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def per_body(self) -> Counter:
        """How many times each distinct body (canonical JSON) was requested."""
        with self.lock:
            return Counter(body_key(b) for b in self.requests)

    def wait_idle(self, quiet: float = 0.5, timeout: float = 10.0) -> None:
        """Wait until no request is being handled and none arrived for ``quiet`` seconds: after a client
        is killed, a request it had already sent may still be read and recorded by a handler thread,
        which a ``reset()`` right after the kill would count as the next run's."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self.lock:
                n, busy = len(self.requests), self.inflight
            if n != last or busy:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.02)
        raise TimeoutError("FakeOpenAI: still busy")

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.headers.clear()
            self.answered.clear()
            self._per_body.clear()
            self.max_inflight = 0

    # -- per-request decisions -------------------------------------------------------------------
    def _admit(self, body: Any, headers: dict) -> tuple[int, int]:
        with self.lock:
            n = len(self.requests)
            self.requests.append(body)
            self.headers.append(headers)
            key = body_key(body)
            attempt = self._per_body[key]
            self._per_body[key] += 1
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            return n, attempt

    def _leave(self) -> None:
        with self.lock:
            self.inflight -= 1

    def _action(self, n: int, body: Any, attempt: int) -> Any:
        if self.faults is None:
            return None
        if callable(self.faults):
            return self.faults(n, body, attempt)
        return self.faults[n] if n < len(self.faults) else None

    def completion(self, body: dict, content: str | list[str] | None = None) -> dict:
        n = body.get("n") or 1
        out = self.reply(body) if content is None else content
        texts = out if isinstance(out, list) else [out] * n
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
        return {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{"index": i, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": t}} for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": prompt_words, "completion_tokens": sum(len(t.split()) for t in texts),
                      "total_tokens": prompt_words + sum(len(t.split()) for t in texts)},
        }


_ACTIONS = {"close", "timeout", "malformed", "no_choices", "empty"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"     # keep-alive, as real servers do: the client pools connections
    fake: FakeOpenAI

    def log_message(self, *args) -> None:   # quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.fake.lock:
            self.fake._conns.add(self.connection)

    def finish(self) -> None:
        with self.fake.lock:
            self.fake._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _send(self, status: int, body: str | bytes | dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else (
            body.encode() if isinstance(body, str) else body)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:     # the client gave up (timeout) and closed the socket
            self.close_connection = True
            raise

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "test"}
                                                        for m in self.fake.models]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        fake = self.fake
        length = int(self.headers.get("Content-Length") or 0)
        text = self.rfile.read(length).decode("utf-8", "replace")
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        n, attempt = fake._admit(body, {k.lower(): v for k, v in self.headers.items()})
        try:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                return
            if not isinstance(body, dict):
                self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                return
            self._act(fake._action(n, body, attempt), body)
        except OSError:
            pass
        except Exception as e:  # a bug in a test's reply or faults function: say so in the reply
            self._send(500, {"error": {"message": f"FakeOpenAI: {type(e).__name__}: {e}", "type": "test_bug"}})
        finally:
            fake._leave()

    def _act(self, action: Any, body: dict) -> None:
        fake = self.fake
        if isinstance(action, dict):
            time.sleep(action.get("delay", 0.0))
            out = action["body"] if "body" in action else fake.completion(body)
            self._send(action.get("status", 200), out, action.get("headers"))
            return
        action = None if action in (None, "ok") else str(action)
        if action is not None and not action.isdigit() and action not in _ACTIONS:
            raise ValueError(f"unknown fault {action!r} (one of {', '.join(sorted(_ACTIONS))} or a status code)")
        if action == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if action == "timeout":
            time.sleep(fake.stall)
            action = None
        if action == "malformed":
            self._send(200, "{not json")
        elif action == "no_choices":
            self._send(200, {"id": "x", "object": "chat.completion", "model": body.get("model", "")})
        elif action == "429":
            self._send(429, {"error": {"message": "rate limited", "type": "rate_limit"}}, {"Retry-After": "0"})
        elif action is not None and action.isdigit():
            self._send(int(action), {"error": {"message": f"scripted HTTP {action}", "type": "test"}})
        else:
            time.sleep(fake.latency)
            self._send(200, fake.completion(body, "" if action == "empty" else None))
            with fake.lock:
                fake.answered.append(body)


def kill_once_cached(script: str, args: list[str], cache: Path, at_least: int, timeout: float = 40) -> set[str]:
    """Run ``python -c script *args`` from the repository root, SIGKILL it as soon as ``cache``
    holds ``at_least`` entries, and return the cached keys (file stems). Fails if the process ends
    on its own first (it must be killed mid-run)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(list(cache.rglob("*.json"))) < at_least:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode != 0                        # killed, not finished
    return {f.stem for f in cache.rglob("*.json")}
