"""LLM-as-judge against a real local OpenAI-compatible server (tests/openai_server.py): scoring and
order, concurrency, retries per fault kind, fatal errors, the on-disk cache, a killed run resumed,
and the API key kept out of logs, errors and the cache."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest

from openai_server import FakeOpenAI, body_key, closed_url, kill_once_cached
from sftpipe.config import JudgeParams
from sftpipe.errors import UserError
from sftpipe.llm.openai_chat import RETRY_AFTER_CAP, cache_path, request_hash, retry_delay
from sftpipe.select.judge import build_request, fill_rubric, judge_rows, normalize, parse_score

KEY_ENV = "SFTPIPE_TEST_JUDGE_KEY"
RUBRIC = "Grade this.\nInstruction:\n{prompt}\nResponse:\n{response}\nReply 'Score: N'."


def rows(n: int, tag: str = "answer") -> list[dict]:
    return [{"id": f"t:{i}", "source": "t", "label": None, "meta": {"lang": "en"},
             "messages": [{"role": "system", "content": "be brief"},
                          {"role": "user", "content": f"question {i}"},
                          {"role": "assistant", "content": f"{tag} {i}"}]} for i in range(n)]


def expected_raw(i: int) -> int:
    return 1 + i % 10


def judge_reply(body: dict) -> str:
    """A deterministic judge: the score is a function of the row number in the response."""
    i = int(re.search(r"(?:answer|slow) (\d+)", body["messages"][0]["content"]).group(1))
    return f"Score: {expected_raw(i)}\nreason: row {i}"


def params(url: str, tmp_path: Path, **kw) -> JudgeParams:
    base = dict(enabled=True, base_url=url, model="judge", api_key_env=KEY_ENV, rubric=RUBRIC, concurrency=4,
                timeout=2.0, max_retries=3, backoff=0.01, cache_dir=str(tmp_path / "cache"))
    return JudgeParams(**{**base, **kw})


class Counter:
    def __init__(self):
        self.n = 0

    def update(self, k: int) -> None:
        self.n += k


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)


def assert_scored(out: list[dict], n: int) -> None:
    assert len(out) == n
    for i, r in enumerate(out):
        assert r["error"] is None, (i, r)
        assert r["raw_score"] == expected_raw(i)
        assert r["score"] == pytest.approx((expected_raw(i) - 1) / 9)


# ---------------------------------------------------------------------------------------------- basics

def test_scores_come_back_in_input_order_and_requests_are_as_configured(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    recs = rows(13)
    progress = Counter()

    def later_rows_first(n, body, attempt):    # replies arrive in reverse row order
        i = int(re.search(r"answer (\d+)", body["messages"][0]["content"]).group(1))
        return {"delay": 0.03 * (13 - i)}

    with FakeOpenAI(reply=judge_reply, faults=later_rows_first) as srv:
        out = judge_rows(recs, params(srv.url, tmp_path, temperature=0.3, max_tokens=17, concurrency=13),
                         progress=progress)
    assert_scored(out, 13)
    assert all(r["cached"] is False and r["raw"].startswith("Score: ") for r in out)
    assert progress.n == 13
    assert srv.count == 13
    body = next(b for b in srv.requests if "question 4" in b["messages"][0]["content"])
    assert body["model"] == "judge" and body["temperature"] == 0.3 and body["max_tokens"] == 17
    assert body["messages"] == [{"role": "user", "content": RUBRIC.replace("{prompt}", "be brief\nquestion 4")
                                 .replace("{response}", "answer 4")}]
    assert {h.get("authorization") for h in srv.headers} == {"Bearer sk-test-123"}


def test_without_a_key_a_placeholder_is_sent(tmp_path):
    with FakeOpenAI(reply=judge_reply) as srv:
        assert_scored(judge_rows(rows(2), params(srv.url, tmp_path)), 2)
    assert {h.get("authorization") for h in srv.headers} == {"Bearer EMPTY"}


def test_requests_run_concurrently(tmp_path):
    with FakeOpenAI(reply=judge_reply, latency=0.25) as srv:
        judge_rows(rows(1), params(srv.url, tmp_path / "warm"))     # imports and first connection: not timed
        srv.reset()
        out = judge_rows(rows(8), params(srv.url, tmp_path, concurrency=8))
    assert_scored(out, 8)
    # counted by the server, not timed (a wall-clock bound failed in CI on a busy machine): with each
    # reply taking 0.25 s, requests sent concurrently overlap there; one at a time never would
    assert srv.max_inflight >= 4, srv.max_inflight


def test_concurrency_one_is_sequential(tmp_path):
    with FakeOpenAI(reply=judge_reply, latency=0.02) as srv:
        assert_scored(judge_rows(rows(5), params(srv.url, tmp_path, concurrency=1)), 5)
    assert srv.max_inflight == 1


def test_identical_requests_are_asked_once(tmp_path):
    recs = rows(3) + rows(3)
    with FakeOpenAI(reply=judge_reply) as srv:
        out = judge_rows(recs, params(srv.url, tmp_path))
    assert srv.count == 3
    assert [r["raw_score"] for r in out] == [expected_raw(i) for i in (0, 1, 2, 0, 1, 2)]


def test_rubric_is_filled_in_one_pass_so_braces_in_rows_are_safe(tmp_path):
    prompt = "Format {x} and {0} and {response} and { alone and }}{{"
    reply = "def f(): return {'a': 1}  # {prompt}"
    rec = {"id": "b", "source": "t", "meta": {}, "messages": [{"role": "user", "content": prompt},
                                                              {"role": "assistant", "content": reply}]}
    assert fill_rubric("P={prompt};R={response};", prompt, reply) == f"P={prompt};R={reply};"
    with FakeOpenAI(reply=lambda body: "Score: 5") as srv:
        out = judge_rows([rec], params(srv.url, tmp_path))
    assert out[0]["raw_score"] == 5
    assert srv.requests[0]["messages"][0]["content"] == (
        f"Grade this.\nInstruction:\n{prompt}\nResponse:\n{reply}\nReply 'Score: N'.")


# ---------------------------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("text,raw", [
    ("Score: 7\nGood.", 7), ("score：8", 8), ("SCORE = 9", 9), ("**Score:** 6 - fine", 6), ("Score:4.5", 4.5),
    ("I rate this 7/10.", 7), ("Final: 3/10", 3), ("评分：９", 9), ("Rating: 2", 2),
    ("Score: 3. On reflection... Score: 8", 8),       # the verdict comes last
    ("Answer 0 of 20 items; I'd give it 6.", 6),      # first number on the scale
    ("Score: 12", 12), ("0/10", 0),                   # explicit but off the scale: kept raw, clipped later
    ("no idea", None), ("", None), ("0 and 42", None),
])
def test_parse_score(text, raw):
    assert parse_score(text, 1.0, 10.0) == raw


def test_normalize_clips_to_unit_interval():
    assert normalize(1, 1, 10) == 0.0 and normalize(10, 1, 10) == 1.0 and normalize(5.5, 1, 10) == 0.5
    assert normalize(12, 1, 10) == 1.0 and normalize(0, 1, 10) == 0.0


def test_unparsable_and_empty_replies_are_recorded_with_their_text_and_cached(tmp_path):
    replies = {"0": "I cannot decide on this one.", "1": "", "2": "Score: 4"}

    def reply(body):
        return replies[re.search(r"answer (\d+)", body["messages"][0]["content"]).group(1)]

    with FakeOpenAI(reply=reply) as srv:
        p = params(srv.url, tmp_path)
        out = judge_rows(rows(3), p)
        assert out[0] == {"score": None, "raw_score": None, "raw": replies["0"], "error": "unparsable",
                          "cached": False}
        assert out[1]["score"] is None and out[1]["error"] == "empty reply" and out[1]["raw"] == ""
        assert out[2]["raw_score"] == 4 and out[2]["error"] is None
        again = judge_rows(rows(3), p)
    assert srv.count == 3
    assert [{**r, "cached": False} for r in again] == out and all(r["cached"] for r in again)


# ---------------------------------------------------------------------------------------------- retries

@pytest.mark.parametrize("fault", ["429", "500", "503", "timeout", "malformed", "no_choices", "close"])
def test_transient_fault_then_success(tmp_path, fault):
    """Every request fails once with ``fault``, then succeeds: all rows scored, each asked twice."""
    first = lambda n, body, attempt: fault if attempt == 0 else None  # noqa: E731
    with FakeOpenAI(reply=judge_reply, faults=first, stall=1.0) as srv:
        out = judge_rows(rows(4), params(srv.url, tmp_path, concurrency=2, timeout=0.3, max_retries=2))
    assert_scored(out, 4)
    assert srv.count == 8
    assert set(srv.per_body().values()) == {2}


def test_retries_exhausted_give_a_row_error_not_a_crash(tmp_path):
    def faults(n, body, attempt):
        return "500" if "answer 1\n" in body["messages"][0]["content"] else None

    with FakeOpenAI(reply=judge_reply, faults=faults) as srv:
        out = judge_rows(rows(4), params(srv.url, tmp_path, max_retries=2))
        assert out[1] == {"score": None, "raw_score": None, "raw": "", "cached": False,
                          "error": "http 500: scripted HTTP 500 (3 tries)"}
        assert [r["raw_score"] for r in out[::2]] == [1, 3]
        assert sorted(srv.per_body().values()) == [1, 1, 1, 3]
        srv.faults = None
        again = judge_rows(rows(4), params(srv.url, tmp_path, max_retries=2))   # failures are not cached
    assert_scored(again, 4)
    assert [r["cached"] for r in again] == [True, False, True, True]


def test_bad_bodies_exhausted_are_row_errors(tmp_path):
    with FakeOpenAI(reply=judge_reply, faults=lambda n, b, a: "malformed" if n % 2 == 0 else "no_choices") as srv:
        out = judge_rows(rows(2), params(srv.url, tmp_path, max_retries=1, concurrency=1))
    assert all(r["score"] is None and r["error"].startswith("bad response:") for r in out)
    assert srv.count == 4


def test_backoff_doubles_and_retry_after_is_capped():
    assert [retry_delay(a, 0.5) for a in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert 1.0 <= retry_delay(1, 0.5, jitter=0.99) <= 1.1
    assert retry_delay(3, 0.5, retry_after=0.0) == 0.0
    assert retry_delay(0, 0.5, retry_after=2.5) == 2.5
    assert retry_delay(0, 0.5, retry_after=10_000) == RETRY_AFTER_CAP


def test_backoff_is_waited_between_retries(tmp_path):
    with FakeOpenAI(reply=judge_reply, faults=["503", "503"]) as srv:
        t0 = time.perf_counter()
        assert_scored(judge_rows(rows(1), params(srv.url, tmp_path, backoff=0.15)), 1)
        elapsed = time.perf_counter() - t0
    assert srv.count == 3
    assert elapsed >= 0.15 + 0.3                  # 0.15 s, then 0.3 s


def test_retry_after_header_is_honoured(tmp_path):
    slow429 = {"status": 429, "body": {"error": {"message": "slow down"}}, "headers": {"Retry-After": "0.4"}}
    with FakeOpenAI(reply=judge_reply, faults=[slow429]) as srv:
        t0 = time.perf_counter()
        assert_scored(judge_rows(rows(1), params(srv.url, tmp_path, backoff=0.0)), 1)
        elapsed = time.perf_counter() - t0
    assert srv.count == 2 and elapsed >= 0.4


# ---------------------------------------------------------------------------------------------- fatal errors

def test_endpoint_down_is_one_user_error_naming_the_url(tmp_path):
    url = closed_url()
    t0 = time.perf_counter()
    with pytest.raises(UserError) as e:
        judge_rows(rows(20), params(url, tmp_path, max_retries=2, concurrency=2))
    msg = str(e.value)
    assert msg == f"cannot reach judge endpoint {url} (connection refused)"
    assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.json"))


def test_endpoint_dying_mid_run_stops_with_a_user_error(tmp_path):
    def faults(n, body, attempt):      # the server goes down while the 4th request is in flight
        if n == 3:
            srv.stop()
            return "close"

    srv = FakeOpenAI(reply=judge_reply, faults=faults).start()
    try:
        with pytest.raises(UserError, match=r"stopped answering \(connection refused; 4 rows in a row after 3 "
                                            r"replies\); replies so far are cached, rerun to resume$"):
            judge_rows(rows(30), params(srv.url, tmp_path, concurrency=1, max_retries=1))
    finally:
        srv.stop()
    assert srv.count == 4
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 3


@pytest.mark.parametrize("status,hint", [("401", "check the key in \\$" + KEY_ENV),
                                         ("403", "check the key"), ("404", "check judge.model \\('judge'\\)")])
def test_client_errors_stop_the_run_without_retry(tmp_path, status, hint):
    with FakeOpenAI(reply=judge_reply, faults=lambda n, b, a: status) as srv:
        with pytest.raises(UserError, match=rf"^judge endpoint {re.escape(srv.url)} answered HTTP {status} "
                                            rf"\(scripted HTTP {status}\); {hint}") as e:
            judge_rows(rows(5), params(srv.url, tmp_path, concurrency=1, max_retries=5))
        assert srv.count == 1
    assert "\n" not in str(e.value)


def test_a_400_is_a_row_error_unless_every_request_gets_one(tmp_path):
    def one_bad(n, body, attempt):
        return "400" if "answer 2\n" in body["messages"][0]["content"] else None

    with FakeOpenAI(reply=judge_reply, faults=one_bad) as srv:
        out = judge_rows(rows(4), params(srv.url, tmp_path, max_retries=3))
        assert out[2]["error"] == "http 400: scripted HTTP 400" and out[2]["score"] is None
        assert srv.per_body()[body_key(next(b for b in srv.requests if "answer 2\n" in b["messages"][0]["content"]))] == 1
        assert [r["raw_score"] for r in out] == [1, 2, None, 4]
    with FakeOpenAI(reply=judge_reply, faults=lambda n, b, a: "400") as srv:
        with pytest.raises(UserError, match=r"rejected every request: http 400: scripted HTTP 400$"):
            judge_rows(rows(3), params(srv.url, tmp_path))


def test_missing_endpoint_params_are_a_user_error(tmp_path):
    with pytest.raises(UserError, match="judge.base_url and judge.model"):
        judge_rows(rows(1), JudgeParams(cache_dir=str(tmp_path)))


# ---------------------------------------------------------------------------------------------- cache

def test_rerun_is_served_from_the_cache_with_zero_requests(tmp_path, monkeypatch):
    recs = rows(10)
    with FakeOpenAI(reply=judge_reply) as srv:
        p = params(srv.url, tmp_path)
        first = judge_rows(recs, p)
        assert srv.count == 10
        files = sorted((tmp_path / "cache").rglob("*.json"))
        assert len(files) == 10
        for rec in recs:
            key = request_hash(build_request(rec, p))
            path = cache_path(tmp_path / "cache", key)
            assert path.parent.name == key[:2] and path in files
            assert json.loads(path.read_text())["content"] == judge_reply(build_request(rec, p))
        monkeypatch.setenv(KEY_ENV, "another-key")          # the key is not part of the request hash
        progress = Counter()
        second = judge_rows(recs, p, progress=progress)
        assert srv.count == 10 and progress.n == 10
        assert all(r["cached"] for r in second)
        assert [{**r, "cached": False} for r in second] == first
        rescaled = judge_rows(recs, p.model_copy(update={"min_score": 0.0, "max_score": 20.0}))
        assert srv.count == 10                               # the scale is applied to cached text
        assert rescaled[9]["score"] == pytest.approx(10 / 20)
        judge_rows(recs[:4], p.model_copy(update={"temperature": 0.5}))
        assert srv.count == 14                               # a different request is asked again
        judge_rows(recs[:2], p, cache_dir=tmp_path / "elsewhere")
        assert srv.count == 16                               # cache_dir overrides params.cache_dir


def test_corrupt_cache_entries_are_asked_again(tmp_path):
    with FakeOpenAI(reply=judge_reply) as srv:
        p = params(srv.url, tmp_path)
        judge_rows(rows(3), p)
        path = cache_path(tmp_path / "cache", request_hash(build_request(rows(3)[1], p)))
        path.write_text("{trunc")
        out = judge_rows(rows(3), p)
    assert_scored(out, 3)
    assert srv.count == 4 and [r["cached"] for r in out] == [True, False, True]


KILL_SCRIPT = """
import json, sys
from sftpipe.config import JudgeParams
from sftpipe.select.judge import judge_rows
params, recs, cache = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
judge_rows(recs, JudgeParams(**params), cache_dir=cache)
print("finished")
"""


def test_a_killed_run_keeps_its_replies_and_the_rerun_asks_only_for_the_rest(tmp_path):
    recs = rows(16, tag="slow")
    cache = tmp_path / "cache"
    with FakeOpenAI(reply=judge_reply, latency=0.25) as srv:
        p = params(srv.url, tmp_path, concurrency=2)
        done = kill_once_cached(KILL_SCRIPT, [p.model_dump_json(), json.dumps(recs), str(cache)], cache, 4)
        assert 4 <= len(done) < 16
        for f in cache.rglob("*.json"):                    # every entry complete (written atomically)
            assert json.loads(f.read_text())["key"] == f.stem
        srv.wait_idle()
        srv.reset()
        out = judge_rows(recs, p)
    assert_scored(out, 16)
    key_of = {build_request(r, p)["messages"][0]["content"]: request_hash(build_request(r, p)) for r in recs}
    asked = [key_of[b["messages"][0]["content"]] for b in srv.requests]
    assert not set(asked) & done                           # nothing already answered and cached is asked again
    assert sorted(asked) == sorted(set(key_of.values()) - done)
    assert [r["cached"] for r in out] == [key_of[build_request(r, p)["messages"][0]["content"]] in done
                                          for r in recs]


# ---------------------------------------------------------------------------------------------- the key

def test_the_key_never_reaches_logs_errors_cache_or_results(tmp_path, monkeypatch, caplog):
    secret = "sk-SECRET-4f9a7c2e"
    monkeypatch.setenv(KEY_ENV, secret)
    caplog.set_level(logging.DEBUG)
    echo = {"status": 500, "body": {"error": {"message": f"upstream rejected key {secret}"}}}

    def faults(n, body, attempt):      # every request fails once, echoing the key back in its error
        return echo if attempt == 0 else None

    with FakeOpenAI(reply=judge_reply, faults=faults) as srv:
        out = judge_rows(rows(4), params(srv.url, tmp_path, max_retries=1))
        bad = judge_rows(rows(2, tag="other"), params(srv.url, tmp_path, max_retries=0))
        srv.faults = lambda n, b, a: {"status": 401, "body": {"error": {"message": f"bad key {secret}"}}}
        with pytest.raises(UserError) as e:
            judge_rows(rows(2, tag="third"), params(srv.url, tmp_path))
    assert {h["authorization"] for h in srv.headers} == {f"Bearer {secret}"}   # it was really used
    assert_scored(out, 4)
    assert bad[0]["error"] == "http 500: upstream rejected key *** (1 try)"
    assert secret not in str(e.value) and "bad key ***" in str(e.value)
    assert secret not in json.dumps(out + bad)
    assert secret not in caplog.text and caplog.records                       # logs were captured
    files = list((tmp_path / "cache").rglob("*"))
    assert any(f.suffix == ".json" for f in files)
    for f in files:
        if f.is_file():
            assert secret not in f.read_text()


def test_an_unwritable_cache_is_one_user_error(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with FakeOpenAI(reply=judge_reply) as srv:
        with pytest.raises(UserError, match=r"^cannot create the judge cache folder .*cache/[0-9a-f]{2}: ") as e:
            judge_rows(rows(6), params(srv.url, tmp_path, concurrency=2))
        assert srv.count <= 2                    # the run stopped at the first failure
    assert "\n" not in str(e.value)
