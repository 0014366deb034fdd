"""LLM-as-judge scores through any OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp, a hosted API).

Each row becomes one chat request: the rubric with ``{prompt}`` and ``{response}`` filled in (one
pass of substitution, so braces, or a placeholder's name, inside the row's text stay as they are).
The reply's "Score: N" (or "N/max", or else its first number on the scale) is the raw score,
normalized to [0, 1] over ``min_score..max_score`` and clipped.

Design:

* Transport is the ``openai`` client with its own retries off (``max_retries=0``); the retry policy
  is ours: 429, 408, 5xx, timeouts, dropped connections and broken bodies (not JSON, no
  ``choices``) are retried up to ``max_retries`` times, after ``backoff * 2**attempt`` seconds
  (plus up to 10% jitter, seeded by the request, so runs are reproducible), or after the
  ``Retry-After`` a 429/503 sends (capped at :data:`RETRY_AFTER_CAP`). A row whose retries run out
  gets ``error`` and no score; the run goes on.
* Errors that no retry fixes stop the run with a one-line :class:`UserError` naming the endpoint:
  HTTP 401/403/404 and other 4xx (bad key, unknown model or route), and an endpoint that never
  answers at all (connection refused for every request; also after ``2 * concurrency`` rows in a
  row could not connect, mid-run). HTTP 400/413/422 concern one request (a prompt longer than
  the model's context), so they are row errors, unless every request of the run got one.
* Requests run on a thread pool of ``concurrency`` workers sharing one client (thread-safe);
  results are gathered by row index, so they come back in input order whatever the timing.
  Rows whose request is identical are asked once.
* Cache: every reply (parsable or not; never a transport failure) is written, as soon as it
  arrives, to ``cache_dir/<2 hex>/<sha256>.json``, the hash of the canonical JSON of the request
  (base_url, model, messages, temperature, max_tokens; never the API key), through a temporary
  file and ``os.replace``, so a killed run keeps every reply it got and a rerun asks only for the
  rest. Scores are parsed from the cached text on every run, so changing the scale needs no
  requests.
* The API key is read from the environment variable ``api_key_env`` ("EMPTY" when unset, which
  local servers accept). It goes into the Authorization header only: messages built from server
  replies have it masked, and it is never part of a log line, an error, the cache or a result.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ..config import JudgeParams
from ..errors import UserError
from ..schema import last_turn_split, prompt_text

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "EMPTY"
RETRY_AFTER_CAP = 60.0          # seconds: a longer Retry-After is not waited out in full
JITTER = 0.1                    # backoff is stretched by up to this share, per request and attempt
RETRY_STATUS = {408, 409, 425, 429}   # plus every 5xx
ROW_STATUS = {400, 413, 422}    # a problem with this one request (e.g. longer than the context)
CACHE_VERSION = 1

_NUM = r"([-+]?\d+(?:\.\d+)?)"
_SCORE = re.compile(r"(?:score|rating|评分|分数|得分)\s*\**\s*(?:[:：=]|is)\s*\**\s*" + _NUM, re.I)
_FRACTION = re.compile(_NUM + r"\s*/\s*" + _NUM)
_ANY_NUM = re.compile(_NUM)
_PLACEHOLDER = re.compile(r"\{(prompt|response)\}")


# --------------------------------------------------------------------------------------------------
# request building, cache keys, parsing
# --------------------------------------------------------------------------------------------------

def fill_rubric(rubric: str, prompt: str, response: str) -> str:
    """The rubric with ``{prompt}`` and ``{response}`` replaced in one pass (not ``str.format``:
    the row's own braces, or a ``{response}`` written inside the prompt, are left alone)."""
    values = {"prompt": prompt, "response": response}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], rubric)


def build_request(rec: dict, params: JudgeParams) -> dict:
    """The chat request for one row: what is sent (besides the key) and what the cache key hashes."""
    history, reply = last_turn_split(rec)
    content = fill_rubric(params.rubric, prompt_text({"messages": history}), reply)
    return {"base_url": _norm_url(params.base_url), "model": params.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": params.temperature, "max_tokens": params.max_tokens}


def request_hash(request: dict) -> str:
    """sha256 of the request's canonical JSON (sorted keys, no whitespace, UTF-8)."""
    canon = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def parse_score(text: str, min_score: float, max_score: float) -> float | None:
    """The raw score in a judge's reply, or None.

    "Score: N" (any case, ASCII or full-width colon, also "Rating: N" and "评分：N"; the last one
    wins, as a judge that reasons first states its verdict last), else "N/max", else the first
    number within [min_score, max_score]."""
    hits = _SCORE.findall(text)
    if hits:
        return float(hits[-1])
    for num, den in _FRACTION.findall(text):
        if math.isclose(float(den), max_score):
            return float(num)
    for num in _ANY_NUM.findall(text):
        if min_score <= float(num) <= max_score:
            return float(num)
    return None


def normalize(raw: float, min_score: float, max_score: float) -> float:
    return min(1.0, max(0.0, (raw - min_score) / (max_score - min_score)))


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


def _cache_read(cache_dir: Path, key: str) -> str | None:
    path = cache_path(cache_dir, key)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("judge cache: ignoring unreadable %s (%s)", path, _one_line(e))
        return None
    if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("content"), str):
        log.warning("judge cache: ignoring %s (not a cache entry for this request)", path)
        return None
    return entry["content"]


def _cache_write(cache_dir: Path, key: str, content: str, model: str | None, finish_reason) -> None:
    path = cache_path(cache_dir, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the judge cache folder {path.parent}: {e.strerror or e}") from None
    entry = {"v": CACHE_VERSION, "key": key, "model": model, "finish_reason": finish_reason, "content": content}
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(json.dumps(entry, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write the judge cache {path}: {e.strerror or e}") from None


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


class _Judge:
    def __init__(self, params: JudgeParams, cache_dir: Path):
        self.p = params
        self.cache_dir = cache_dir
        self.url = _safe_url(_norm_url(params.base_url))
        self.key = os.environ.get(params.api_key_env) or PLACEHOLDER_KEY
        self.health = _Health(dead_limit=max(2 * params.concurrency, 4))
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

    def ask_once(self, request: dict) -> tuple[str, str | None]:
        """One HTTP request: (content, finish_reason), or _Transient / _RowFailed / UserError."""
        import openai

        try:
            raw = self.client().chat.completions.with_raw_response.create(
                model=request["model"], messages=request["messages"],
                temperature=request["temperature"], max_tokens=request["max_tokens"])
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
                    404: f"check judge.model ({self.p.model!r}) and judge.base_url"}.get(status, "")
            raise UserError(f"judge endpoint {self.url} answered HTTP {status}" + (f" ({detail})" if detail else "")
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
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise _Transient("bad response: no choices")
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if content is not None and not isinstance(content, str):
            raise _Transient("bad response: message content is not a string")
        return content or "", choices[0].get("finish_reason")

    def ask(self, key: str, request: dict) -> str:
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
                log.debug("judge: %s; retry %d/%d in %.2fs", e.error, attempt + 1, self.p.max_retries, delay)
                if self.health.stop.wait(delay):
                    raise _Stopped() from None
                continue
            if self.key != PLACEHOLDER_KEY and self.key in content:     # a server echoing the key
                content = content.replace(self.key, "***")
            _cache_write(self.cache_dir, key, content, request["model"], finish)
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
            h.fail(UserError(f"cannot reach judge endpoint {self.url} ({reason})"))
        elif dead >= h.dead_limit:
            h.fail(UserError(f"judge endpoint {self.url} stopped answering ({reason}; {dead} rows in a row "
                             f"after {answered} replies); replies so far are cached, rerun to resume"))


# --------------------------------------------------------------------------------------------------
# the stage's entry point
# --------------------------------------------------------------------------------------------------

def _result(content: str | None, params: JudgeParams, cached: bool, error: str | None = None) -> dict:
    if content is None:
        return {"score": None, "raw_score": None, "raw": "", "error": error, "cached": False}
    raw_score = parse_score(content, params.min_score, params.max_score)
    if raw_score is None:
        error = "empty reply" if not content.strip() else "unparsable"
        return {"score": None, "raw_score": None, "raw": content, "error": error, "cached": cached}
    return {"score": normalize(raw_score, params.min_score, params.max_score), "raw_score": raw_score,
            "raw": content, "error": None, "cached": cached}


def judge_rows(records: list[dict], params: JudgeParams, cache_dir: str | Path | None = None,
               progress=None) -> list[dict]:
    """One result per record, in input order:
    ``{"score", "raw_score", "raw", "error", "cached"}`` (see the module docstring)."""
    if not params.base_url or not params.model:
        raise UserError("the judge needs judge.base_url and judge.model in params.yaml")
    cache = Path(cache_dir if cache_dir is not None else params.cache_dir)
    requests: dict[str, dict] = {}
    rows_of: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        req = build_request(rec, params)
        key = request_hash(req)
        requests.setdefault(key, req)
        rows_of.setdefault(key, []).append(i)
    out: list[dict | None] = [None] * len(records)

    def settle(key: str, result: dict) -> None:
        for i in rows_of[key]:
            out[i] = dict(result)
        if progress is not None:
            progress.update(len(rows_of[key]))

    todo = []
    for key in rows_of:
        content = _cache_read(cache, key)
        if content is None:
            todo.append(key)
        else:
            settle(key, _result(content, params, cached=True))
    n_cached = len(rows_of) - len(todo)
    row_errors: list[_RowFailed] = []
    if todo:
        judge = _Judge(params, cache)
        pool = ThreadPoolExecutor(max_workers=min(params.concurrency, len(todo)), thread_name_prefix="judge")
        try:
            pending = {pool.submit(judge.task, key, requests[key]): key for key in todo}
            while pending and judge.health.error is None:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    key = pending.pop(fut)
                    kind, value = fut.result()
                    if kind == "ok":
                        settle(key, _result(value, params, cached=False))
                    elif kind == "error":
                        row_errors.append(value)
                        settle(key, _result(None, params, cached=False, error=value.error))
        finally:  # also on an error or Ctrl-C: no new requests, workers stop retrying, queued rows cancelled
            judge.health.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            judge.close()
        if judge.health.error is not None:
            raise judge.health.error
        statuses = {e.status for e in row_errors}
        if row_errors and len(row_errors) == len(todo) and len(statuses) == 1 and None not in statuses:
            raise UserError(f"judge endpoint {judge.url} rejected every request: {row_errors[0].error}")
    failed = sum(1 for r in out if r["error"] not in (None, "unparsable", "empty reply"))
    log.info("judge: %d rows, %d distinct requests, %d from the cache, %d asked; %d failed, %d unparsable",
             len(records), len(rows_of), n_cached, len(todo), failed,
             sum(1 for r in out if r["error"] in ("unparsable", "empty reply")))
    if row_errors:
        log.warning("judge: %d requests failed (first: %s)", len(row_errors), row_errors[0].error)
    return out
