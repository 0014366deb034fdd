"""Chat requests to any OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp, a hosted API), with our
retries, a thread pool and an on-disk cache: the transport the LLM judge (``select.judge``) and the
generation backends share.

* Transport is the ``openai`` client with its own retries off (``max_retries=0``); the retry policy
  is ours: 429, 408, 5xx, timeouts, dropped connections and broken bodies (not JSON, no
  ``choices``, fewer choices than asked for) are retried up to ``max_retries`` times, after
  ``backoff * 2**attempt`` seconds (plus up to 10% jitter, seeded by the request, so runs are
  reproducible), or after the ``Retry-After`` a 429/503 sends (capped at :data:`RETRY_AFTER_CAP`).
  A request whose retries run out is a row error; the run goes on.
* Errors that no retry fixes stop the run with a one-line :class:`UserError` naming the endpoint:
  HTTP 401/403/404 and other 4xx (bad key, unknown model or route), and an endpoint that never
  answers at all (connection refused for every request; also after ``2 * concurrency`` requests in
  a row could not connect, mid-run). HTTP 400/413/422 concern one request (a prompt longer than
  the model's context), so they are row errors, unless every request of the run got one.
* Requests run on a thread pool of ``concurrency`` workers sharing one client (thread-safe);
  each result is handed to the caller's ``settle`` as it arrives (in the caller's thread).
* Cache: every reply (never a transport failure) is written, as soon as it arrives, to
  ``cache_dir/<2 hex>/<sha256>.json``, the hash of the canonical JSON of the request (base_url,
  model, messages, sampling settings; never the API key), through a temporary file and
  ``os.replace``, so a killed run keeps every reply it got and a rerun asks only for the rest.
  A request for ``n`` > 1 samples caches its ``n`` replies as one entry (a list).
* The API key is read from the environment variable ``api_key_env`` ("EMPTY" when unset, which
  local servers accept). It goes into the Authorization header only: text built from server
  replies has it masked, and it is never part of a log line, an error, the cache or a result.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union
from urllib.parse import urlsplit, urlunsplit

from ..errors import UserError

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "EMPTY"
RETRY_AFTER_CAP = 60.0          # seconds: a longer Retry-After is not waited out in full
JITTER = 0.1                    # backoff is stretched by up to this share, per request and attempt
RETRY_STATUS = {408, 409, 425, 429}   # plus every 5xx
ROW_STATUS = {400, 413, 422}    # a problem with this one request (e.g. longer than the context)
CACHE_VERSION = 1


# --------------------------------------------------------------------------------------------------
# requests, cache keys, retries
# --------------------------------------------------------------------------------------------------

def request_hash(request: dict) -> str:
    """sha256 of the request's canonical JSON (sorted keys, no whitespace, UTF-8)."""
    canon = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()



def retry_delay(attempt: int, backoff: float, retry_after: float | None = None, jitter: float = 0.0) -> float:
    """Seconds to wait before retry number ``attempt + 1``: the server's Retry-After (capped) when it
    sent one, else ``backoff * 2**attempt``, stretched by ``jitter`` (0..1) times :data:`JITTER`."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_AFTER_CAP)
    return backoff * (2 ** attempt) * (1.0 + JITTER * jitter)


def _retry_after(headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), if present."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _norm_url(url: str | None) -> str:
    return (url or "").rstrip("/")


def _safe_url(url: str) -> str:
    """The URL without any ``user:password@`` part, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."



# --------------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------------

def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.json"


Content = Union[str, list[str]]     # one reply, or the n replies of a request for n samples


def _cache_read(cache_dir: Path, key: str) -> Content | None:
    path = cache_path(cache_dir, key)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("cache: ignoring unreadable %s (%s)", path, _one_line(e))
        return None
    content = entry.get("content") if isinstance(entry, dict) else None
    if not isinstance(entry, dict) or entry.get("key") != key or not (
            isinstance(content, str) or isinstance(content, list) and all(isinstance(c, str) for c in content)):
        log.warning("cache: ignoring %s (not a cache entry for this request)", path)
        return None
    return entry["content"]


def _cache_write(cache_dir: Path, key: str, content: Content, model: str | None, finish_reason,
                 name: str) -> None:
    path = cache_path(cache_dir, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the {name} cache folder {path.parent}: {e.strerror or e}") from None
    entry = {"v": CACHE_VERSION, "key": key, "model": model, "finish_reason": finish_reason, "content": content}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(entry, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write the {name} cache {path}: {e.strerror or e}") from None


# --------------------------------------------------------------------------------------------------
# transport
# --------------------------------------------------------------------------------------------------

class _RowFailed(Exception):
    """Retries exhausted (or a row-level 4xx): the row gets ``error``."""

    def __init__(self, error: str, unreachable: bool = False, status: int | None = None):
        super().__init__(error)
        self.error, self.unreachable, self.status = error, unreachable, status


class _Stopped(Exception):
    """Another worker raised a UserError: stop without another request."""


class _Transient(Exception):
    def __init__(self, error: str, retry_after: float | None = None, unreachable: bool = False):
        super().__init__(error)
        self.error, self.retry_after, self.unreachable = error, retry_after, unreachable


def _connect_failure(exc: BaseException) -> str | None:
    """'connection refused' (or the resolver's message) when ``exc`` failed to open a connection at
    all; None for failures after connecting (a dropped connection, a timeout)."""
    seen = set()
    cur: BaseException | None = exc
    found = None
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError):
            return "connection refused"
        if type(cur).__name__ == "ConnectError" and found is None:
            found = _one_line(cur) or "cannot connect"
        cur = cur.__cause__ or cur.__context__
    return found


@dataclass
class _Health:
    """Run-wide state: stop flag, whether the endpoint ever answered, rows that could not connect."""

    dead_limit: int
    answered: int = 0
    dead_in_a_row: int = 0
    error: UserError | None = None

    def __post_init__(self):
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def got_response(self) -> None:
        with self.lock:
            self.answered += 1
            self.dead_in_a_row = 0

    def fail(self, error: UserError) -> None:
        with self.lock:
            if self.error is None:
                self.error = error
        self.stop.set()


@dataclass(frozen=True)
class Endpoint:
    """Where and how to send: ``name`` is the params section, for messages (e.g. ``judge``)."""

    name: str
    base_url: str | None
    model: str | None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 5
    backoff: float = 1.0

    @classmethod
    def of(cls, name: str, params) -> "Endpoint":
        """From a params section with these fields (``select.judge``, ``generate.openai``, ...)."""
        return cls(name, params.base_url, params.model, params.api_key_env, params.concurrency,
                   params.timeout, params.max_retries, params.backoff)


# sampling fields a request may carry besides model and messages, passed through as they are
SAMPLING = ("temperature", "max_tokens", "top_p", "n", "seed", "stop")


class _Client:
    def __init__(self, endpoint: Endpoint, cache_dir: Path):
        self.p = endpoint
        self.cache_dir = cache_dir
        self.url = _safe_url(_norm_url(endpoint.base_url))
        self.key = os.environ.get(endpoint.api_key_env) or PLACEHOLDER_KEY
        self.health = _Health(dead_limit=max(2 * endpoint.concurrency, 4))
        self._client = None
        self._client_lock = threading.Lock()
    def client(self):
        with self._client_lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(base_url=_norm_url(self.p.base_url), api_key=self.key,
                                             timeout=self.p.timeout, max_retries=0)
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def scrub(self, text: str) -> str:
        text = _one_line(text)
        if self.key and self.key != PLACEHOLDER_KEY:
            text = text.replace(self.key, "***")
        return text

    def _detail(self, exc) -> str:
        """The server's error message (masked, one line); the openai client puts the body's
        ``error`` object, or the whole body when it has none, in ``exc.body``."""
        body = getattr(exc, "body", None)
        msg = None
        if isinstance(body, dict):
            msg = body.get("message")
            if msg is None and isinstance(body.get("error"), (str, dict)):
                err = body["error"]
                msg = err.get("message") if isinstance(err, dict) else err
        elif isinstance(body, str):
            msg = body
        return self.scrub(msg if msg is not None else getattr(exc, "message", "") or "")

    def ask_once(self, request: dict) -> tuple[Content, str | list | None]:
        """One HTTP request: (content, finish_reason), both lists when the request has ``n``; or
        _Transient / _RowFailed / UserError."""
        import openai

        try:
            raw = self.client().chat.completions.with_raw_response.create(
                model=request["model"], messages=request["messages"],
                **{k: request[k] for k in SAMPLING if request.get(k) is not None})
        except openai.APIStatusError as e:
            self.health.got_response()
            status = e.status_code
            detail = self._detail(e)
            error = f"http {status}" + (f": {detail}" if detail else "")
            if status in RETRY_STATUS or status >= 500:
                raise _Transient(error, _retry_after(e.response.headers))
            if status in ROW_STATUS:
                raise _RowFailed(error, status=status)
            hint = {401: "check the key in $" + self.p.api_key_env, 403: "check the key in $" + self.p.api_key_env,
                    404: f"check {self.p.name}.model ({self.p.model!r}) and {self.p.name}.base_url"}.get(status, "")
            raise UserError(f"{self.p.name} endpoint {self.url} answered HTTP {status}" + (f" ({detail})" if detail else "")
                            + (f"; {hint}" if hint else "")) from None
        except openai.APITimeoutError:
            raise _Transient(f"timeout after {self.p.timeout:g}s") from None
        except openai.APIConnectionError as e:
            refused = _connect_failure(e)
            cause = e.__cause__ or e.__context__
            raise _Transient(refused or f"connection error: {self.scrub(cause or e)}", unreachable=bool(refused)) \
                from None
        self.health.got_response()
        text = raw.text
        try:
            data = json.loads(text)
        except ValueError:
            raise _Transient(f"bad response: not JSON ({self.scrub(text[:60])!r})") from None
        choices = data.get("choices") if isinstance(data, dict) else None
        want = request.get("n") or 1
        if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
            raise _Transient("bad response: no choices")
        if len(choices) < want:
            raise _Transient(f"bad response: {len(choices)} choices of the {want} asked for")
        # the order the server lists them in, by their index when every choice has one
        if all(isinstance(c.get("index"), int) for c in choices):
            choices = sorted(choices, key=lambda c: c["index"])
        contents, finishes = [], []
        for c in choices[:want]:
            message = c.get("message")
            content = message.get("content") if isinstance(message, dict) else None
            if content is not None and not isinstance(content, str):
                raise _Transient("bad response: message content is not a string")
            contents.append(content or "")
            finishes.append(c.get("finish_reason"))
        if "n" not in request:
            return contents[0], finishes[0]
        return contents, finishes

    def ask(self, key: str, request: dict) -> Content:
        """The reply's content, after our retries; cached as soon as it arrives."""
        rng = random.Random(key)
        last: _Transient | None = None
        for attempt in range(self.p.max_retries + 1):
            if self.health.stop.is_set():
                raise _Stopped()
            try:
                content, finish = self.ask_once(request)
            except _Transient as e:
                last = e
                if attempt == self.p.max_retries:
                    break
                delay = retry_delay(attempt, self.p.backoff, e.retry_after, rng.random())
                log.debug("%s: %s; retry %d/%d in %.2fs", self.p.name, e.error, attempt + 1, self.p.max_retries, delay)
                if self.health.stop.wait(delay):
                    raise _Stopped() from None
                continue
            if self.key != PLACEHOLDER_KEY:     # a server echoing the key
                content = ([c.replace(self.key, "***") for c in content] if isinstance(content, list)
                           else content.replace(self.key, "***"))
            _cache_write(self.cache_dir, key, content, request["model"], finish, self.p.name)
            return content
        tries = self.p.max_retries + 1
        raise _RowFailed(f"{last.error} ({tries} tr{'y' if tries == 1 else 'ies'})", unreachable=last.unreachable)

    def task(self, key: str, request: dict):
        """Run in a worker: ('ok', content) or ('error', _RowFailed); UserErrors go to health."""
        try:
            return "ok", self.ask(key, request)
        except _RowFailed as e:
            if e.unreachable:
                self._dead_row(e)
            return "error", e
        except _Stopped:
            return "stopped", None
        except UserError as e:
            self.health.fail(e)
            return "stopped", None

    def _dead_row(self, e: _RowFailed) -> None:
        h = self.health
        with h.lock:
            h.dead_in_a_row += 1
            answered, dead = h.answered, h.dead_in_a_row
        reason = e.error.split(" (")[0]
        if answered == 0:
            h.fail(UserError(f"cannot reach {self.p.name} endpoint {self.url} ({reason})"))
        elif dead >= h.dead_limit:
            h.fail(UserError(f"{self.p.name} endpoint {self.url} stopped answering ({reason}; {dead} rows in a row "
                             f"after {answered} replies); replies so far are cached, rerun to resume"))


# --------------------------------------------------------------------------------------------------
# a run
# --------------------------------------------------------------------------------------------------

@dataclass
class RunStats:
    requests: int
    cached: int
    asked: int
    errors: list[str]           # one per request whose retries ran out


def run_requests(requests: dict[str, dict], endpoint: Endpoint, cache_dir: str | Path,
                 settle: Callable[[str, Content | None, bool, str | None], None]) -> RunStats:
    """Every request (key: :func:`request_hash` of it), from the cache or the endpoint.

    ``settle(key, content, cached, error)`` is called once per key, in this thread, as results come
    in: ``content`` is the reply (a list of ``n`` replies when the request has ``n``), or None with
    ``error`` when the request's retries ran out. A :class:`UserError` (see the module docstring)
    stops the run: no new requests, workers stop retrying; replies so far stay cached.
    """
    if not endpoint.base_url or not endpoint.model:
        raise UserError(f"{endpoint.name} needs {endpoint.name}.base_url and {endpoint.name}.model in params.yaml")
    cache = Path(cache_dir)
    todo = []
    for key in requests:
        content = _cache_read(cache, key)
        if content is None:
            todo.append(key)
        else:
            settle(key, content, True, None)
    row_errors: list[_RowFailed] = []
    if todo:
        client = _Client(endpoint, cache)
        pool = ThreadPoolExecutor(max_workers=min(endpoint.concurrency, len(todo)),
                                  thread_name_prefix=endpoint.name)
        try:
            pending = {pool.submit(client.task, key, requests[key]): key for key in todo}
            while pending and client.health.error is None:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    key = pending.pop(fut)
                    kind, value = fut.result()
                    if kind == "ok":
                        settle(key, value, False, None)
                    elif kind == "error":
                        row_errors.append(value)
                        settle(key, None, False, value.error)
        finally:  # also on an error or Ctrl-C: no new requests, workers stop retrying, queued rows cancelled
            client.health.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            client.close()
        if client.health.error is not None:
            raise client.health.error
        statuses = {e.status for e in row_errors}
        if row_errors and len(row_errors) == len(todo) and len(statuses) == 1 and None not in statuses:
            raise UserError(f"{endpoint.name} endpoint {client.url} rejected every request: {row_errors[0].error}")
    if row_errors:
        log.warning("%s: %d requests failed (first: %s)", endpoint.name, len(row_errors), row_errors[0].error)
    return RunStats(len(requests), len(requests) - len(todo), len(todo), [e.error for e in row_errors])


def run_rows(row_requests: list[dict], endpoint: Endpoint, cache_dir: str | Path,
             result: Callable[[Content | None, bool, str | None], dict], progress=None) -> tuple[list[dict], RunStats]:
    """One request per row, rows with an identical request asked once: ``result(content, cached,
    error)`` builds each row's entry (called per row, so rows never share a mutable result); the
    entries come back in row order, with the run's stats. ``progress`` is updated per row."""
    requests: dict[str, dict] = {}
    rows_of: dict[str, list[int]] = {}
    for i, req in enumerate(row_requests):
        key = request_hash(req)
        requests.setdefault(key, req)
        rows_of.setdefault(key, []).append(i)
    out: list[dict | None] = [None] * len(row_requests)

    def settle(key: str, content: Content | None, cached: bool, error: str | None) -> None:
        for i in rows_of[key]:
            out[i] = result(content, cached, error)
        if progress is not None:
            progress.update(len(rows_of[key]))

    return out, run_requests(requests, endpoint, cache_dir, settle)
