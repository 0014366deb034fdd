"""The create pipeline's stages as commands (prompts -> generate -> reward -> best_of_k), against a real
local OpenAI-compatible server (tests/openai_server.py) that answers some prompts right, some wrong and
fails one; and their library pieces (fresh prompts, reward verdicts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openai_server import FakeOpenAI

from sftpipe.config import PromptsParams, RewardParams
from sftpipe.create.prompts import fresh_prompts
from sftpipe.create.reward import combined, verdict
from sftpipe.create.verify import verify
from sftpipe.io import read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
ENV.pop("SFTPIPE_DEBUG", None)


def held_rows() -> list[dict]:
    """Rows the split holds: the prompts below must avoid their prompts and their (long) answers."""
    pp = PromptsParams(per_category=5, seed=7)
    rows, truth, _ = fresh_prompts([], pp)
    ref = {t["id"]: t["response"] for t in truth}
    return [{**r, "id": f"held:{i}", "messages": [*r["messages"], {"role": "assistant", "content": ref[r["id"]]}]}
            for i, r in enumerate(rows)]


def test_fresh_prompts_avoid_held_rows_and_are_deterministic():
    held = held_rows()
    pp = PromptsParams(per_category=5, seed=7)          # the same seed: the same items come first
    rows, truth, counts = fresh_prompts(held, pp)
    held_prompts = {m["content"] for r in held for m in r["messages"] if m["role"] == "user"}
    held_answers = {r["messages"][-1]["content"] for r in held if r["label"] != "sentiment"}
    ref = {t["id"]: t["response"] for t in truth}
    # the first category's first draws are the held ones (later categories draw from a moved generator)
    assert counts["skipped"]["held_prompt"] + counts["skipped"]["held_answer"] >= 5
    assert not {r["messages"][0]["content"] for r in rows} & held_prompts
    assert not {ref[r["id"]] for r in rows if r["label"] != "sentiment"} & held_answers
    assert all(len(r["messages"]) == 1 and r["messages"][0]["role"] == "user" for r in rows)
    assert fresh_prompts(held, pp)[0] == rows
    assert fresh_prompts(held, pp.model_copy(update={"seed": 8}))[0] != rows
    # the generator's own answers are right where a rule can tell
    verdicts = [verify(r, ref[r["id"]]).ok for r in rows]
    assert verdicts.count(False) == 0 and verdicts.count(True) >= len(rows) * 0.8


def cand(prompt: str, reply: str, label: str = "arithmetic") -> dict:
    return {"id": "p#0", "label": label, "source": "t", "meta": {"candidate_of": "p", "candidate": 0},
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]}


def test_reward_verdicts_length_json_and_rules():
    q = "Tom has 3 apples. Tom gets 4 more. How many apples does Tom have now?"
    rp = RewardParams()
    assert verdict(cand(q, "3 + 4 = 7. Tom has 7 apples."), rp).ok is True
    assert verdict(cand(q, "3 + 4 = 8. Tom has 8 apples."), rp).ok is False
    assert verdict(cand(q, "hello", "invitation"), rp).ok is None
    short = verdict(cand(q, "3 + 4 = 7. Tom has 7 apples."), rp.model_copy(update={"max_chars": 10}))
    assert (short.ok, short.rule) == (False, "length")
    js = rp.model_copy(update={"json_valid": True, "rules": False})
    assert verdict(cand(q, '{"answer": 7}'), js).ok is None
    assert verdict(cand(q, "answer: 7"), js).rule == "json"
    assert combined({"judge": 0.5, "logprob": None}, {"judge": 2.0}) == 1.0
    assert combined({"judge": None}, {}) is None


def run(stage: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", f"stages.{stage}", *args], cwd=cwd, env=ENV, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p


@pytest.fixture
def workdir(tmp_path):
    split = tmp_path / "data" / "split"
    write_jsonl(split / "train.jsonl", held_rows())
    for part in ("validation", "test"):
        write_jsonl(split / f"{part}.jsonl", [])
    write_jsonl(split / "dropped.jsonl", [{"id": "x", "reason": "r", "evidence": {}, "record": {}}])   # a ledger, not rows
    (tmp_path / "params.yaml").write_text(
        "collect:\n  sources: [{path: unused.jsonl, name: unused}]\n"
        "prompts: {per_category: 3, categories: [arithmetic, capital, invitation], languages: [en, zh]}\n",
        encoding="utf-8")
    return tmp_path


def test_prompts_generate_reward_best_of_k_commands(workdir):
    run("prompts", "--split", "data/split", cwd=workdir)
    prompts = read_jsonl(workdir / "data/create/prompts/prompts.jsonl")
    truth = {t["id"]: t["response"] for t in read_jsonl(workdir / "data/create/prompts/truth.jsonl")}
    by_text = {p["messages"][0]["content"]: truth[p["id"]] for p in prompts}
    failing = prompts[1]["messages"][0]["content"]
    no_right = prompts[2]["messages"][0]["content"]

    def reply(body):
        text = body["messages"][-1]["content"]
        right = by_text[text]
        wrong = "1 + 1 = 3. Nobody has 3 things." if "=" in right else "The capital of Nowhere is Atlantis."
        if text == no_right:
            return [wrong] * body["n"]
        return [wrong] * (body["n"] - 1) + [right]      # the last sample is the right one

    faults = lambda n, body, attempt: "500" if body["messages"][-1]["content"] == failing else None  # noqa: E731
    with FakeOpenAI(reply=reply, faults=faults, models=("sft",)) as srv:
        with open(workdir / "params.yaml", "a", encoding="utf-8") as fh:
            fh.write(f"candidates: {{backend: openai, k: 3, temperature: 0.7, cache_dir: data/cache/gen, "
                     f"openai: {{base_url: '{srv.url}', model: sft, max_retries: 1, backoff: 0.0}}}}\n")
        args = ["--section", "candidates", "--out", "data/create/candidates", "--metrics", "metrics/c.json"]
        run("generate", *args, cwd=workdir)
        asked = srv.count
        run("generate", *args, cwd=workdir)                 # a rerun asks nothing new, except the failed prompt
        assert srv.count - asked == 2                       # its request and one retry
    cands = read_jsonl(workdir / "data/create/candidates/candidates.jsonl")
    gen_dropped = read_jsonl(workdir / "data/create/candidates/dropped.jsonl")
    assert [d["id"] for d in gen_dropped] == [prompts[1]["id"]] and "500" in gen_dropped[0]["evidence"]["error"]
    assert len(cands) == 3 * (len(prompts) - 1)
    assert {c["meta"]["candidate_of"] for c in cands} == {p["id"] for p in prompts} - {prompts[1]["id"]}

    run("reward", cwd=workdir)
    rewards = read_jsonl(workdir / "data/create/rewards.jsonl")
    assert [r["id"] for r in rewards] == [c["id"] for c in cands]
    run("best_of_k", cwd=workdir)
    kept = read_jsonl(workdir / "data/create/best_of_k/train.jsonl")
    dropped = read_jsonl(workdir / "data/create/best_of_k/dropped.jsonl")
    assert sorted([r["id"] for r in kept] + [d["id"] for d in dropped]) == sorted(p["id"] for p in prompts)
    reasons = {d["id"]: d["reason"] for d in dropped}
    assert reasons[prompts[1]["id"]] == "generation_failed"
    assert reasons[prompts[2]["id"]] == "no_passing_candidate"
    for r in kept:                                      # verified rows carry the right answer, the last sample
        if r["meta"]["best_of_k"]["ok"]:
            assert r["messages"][-1]["content"] == truth[r["id"]] and r["meta"]["best_of_k"]["chosen"] == 2
    # invitations have no rule: rejected as unverifiable by default, with every verdict as evidence
    inv = [d for d in dropped if d["record"]["label"] == "invitation"]
    assert inv and all(d["reason"] == "unverifiable" and d["evidence"]["verdicts"] == [None] * 3 for d in inv)
    assert all(r["meta"]["best_of_k"]["ok"] is True for r in kept)
    m = json.loads((workdir / "metrics/create/best_of_k.json").read_text())
    assert m["rows_in"] == len(prompts) and m["kept"] == len(kept)
    # unverifiable: keep takes them, their first candidate
    with open(workdir / "params.yaml", "a", encoding="utf-8") as fh:
        fh.write("best_of_k: {unverifiable: keep}\n")
    run("best_of_k", cwd=workdir)
    kept = read_jsonl(workdir / "data/create/best_of_k/train.jsonl")
    inv = [r for r in kept if r["label"] == "invitation"]
    assert inv and all(r["meta"]["best_of_k"]["ok"] is None and r["meta"]["best_of_k"]["chosen"] == 0 for r in inv)


def test_distill_writes_rows_under_the_prompt_ids(workdir):
    run("prompts", "--split", "data/split", cwd=workdir)
    prompts = read_jsonl(workdir / "data/create/prompts/prompts.jsonl")
    truth = {t["id"]: t["response"] for t in read_jsonl(workdir / "data/create/prompts/truth.jsonl")}
    by_text = {p["messages"][0]["content"]: truth[p["id"]] for p in prompts}
    with FakeOpenAI(reply=lambda b: by_text[b["messages"][-1]["content"]], models=("teacher",)) as srv:
        with open(workdir / "params.yaml", "a", encoding="utf-8") as fh:
            fh.write(f"distill: {{backend: openai, k: 1, temperature: 0.0, cache_dir: data/cache/gen, "
                     f"openai: {{base_url: '{srv.url}', model: teacher}}}}\n")
        run("generate", "--section", "distill", "--out", "data/create/distill", "--metrics", "metrics/d.json",
            cwd=workdir)
    rows = read_jsonl(workdir / "data/create/distill/train.jsonl")
    assert [r["id"] for r in rows] == [p["id"] for p in prompts]
    assert all(r["messages"][-1]["content"] == truth[r["id"]] for r in rows)
    m = json.loads((workdir / "metrics/d.json").read_text())
    assert m["exact_match_truth"] == 1.0 and m["verified_correct"] == 1.0 and m["generator"] == "teacher"


def test_reward_logprob_prefers_the_reply_the_model_learned(lookup_model_dir):
    """The reference LM's log-probability as a reward: the lookup model learned each prompt's reply, so
    its own reply scores higher than another prompt's reply, for every prompt."""
    from lookup_model import LOOKUP

    from sftpipe.config import ModelParams, PerplexityParams
    from sftpipe.create.reward import reward_candidates

    rows = []
    for i, (q, a) in enumerate(LOOKUP):
        other = LOOKUP[(i + 1) % len(LOOKUP)][1]
        for j, reply in enumerate((a, other)):
            rows.append({"id": f"p{i}#{j}", "label": "lookup", "source": "t", "meta": {"candidate_of": f"p{i}", "candidate": j},
                         "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": reply}]})
    rp = RewardParams(logprob=True, rules=False, weights={"logprob": 2.0})
    res = reward_candidates(rows, rp, ModelParams(name_or_path=str(lookup_model_dir)), PerplexityParams(template="chat"))
    lp = [r["scores"]["logprob"] for r in res]
    assert all(v is not None and v < 0 for v in lp)
    assert all(lp[2 * i] > lp[2 * i + 1] for i in range(len(LOOKUP)))
    assert all(r["score"] == pytest.approx(2.0 * r["scores"]["logprob"]) for r in res)
    assert all(r["ok"] is None for r in res)            # rules off: no verdicts


def test_reward_judge_scores_and_keeps_unparsable_judgements(tmp_path):
    """The LLM judge as a reward through a real local server: a parsable judgement gives a normalized
    score, an unparsable one no score and its raw text kept, never a crash."""
    from sftpipe.config import JudgeParams, ModelParams, PerplexityParams
    from sftpipe.create.reward import reward_candidates

    q = "Tom has 3 apples. Tom gets 4 more. How many apples does Tom have now?"
    rows = [cand(q, "3 + 4 = 7. Tom has 7 apples."), {**cand(q, "no idea"), "id": "p#1"}]

    def judge(body):
        return "Score: 10\ncorrect" if "= 7" in body["messages"][-1]["content"] else "I cannot grade this"

    with FakeOpenAI(reply=judge, models=("judge",)) as srv:
        jp = JudgeParams(enabled=True, base_url=srv.url, model="judge", cache_dir=str(tmp_path / "c"), backoff=0.0)
        res = reward_candidates(rows, RewardParams(judge=jp), ModelParams(), PerplexityParams())
    assert res[0]["scores"]["judge"] == 1.0 and res[0]["score"] == 1.0 and res[0]["ok"] is True
    assert res[1]["scores"]["judge"] is None and res[1]["score"] is None
    assert res[1]["judge_error"]["raw"] == "I cannot grade this"


def test_vllm_backend_without_the_package_is_one_clear_error(monkeypatch):
    from sftpipe.config import GenerationParams, ModelParams
    from sftpipe.create.backends import generate
    from sftpipe.errors import UserError

    monkeypatch.setitem(sys.modules, "vllm", None)      # import vllm raises ImportError
    with pytest.raises(UserError, match="vllm package"):
        generate([cand("hi", "x")], GenerationParams(backend="vllm"), ModelParams())


def test_generate_stage_killed_mid_run_resumes_without_asking_twice(workdir):
    """SIGKILL the generate command while it is asking the server; the rerun asks only what the cache
    does not hold, and its outputs are those of an uninterrupted run."""
    from openai_server import kill_once_cached

    run("prompts", "--split", "data/split", cwd=workdir)
    prompts = read_jsonl(workdir / "data/create/prompts/prompts.jsonl")
    cache = workdir / "cache"
    reply = lambda b: [f"{b['messages'][-1]['content'][:12]} #{j}" for j in range(b["n"])]  # noqa: E731
    with FakeOpenAI(reply=reply, latency=0.2, models=("sft",)) as srv:
        with open(workdir / "params.yaml", "a", encoding="utf-8") as fh:
            fh.write(f"candidates: {{backend: openai, k: 2, temperature: 0.7, cache_dir: '{cache}', "
                     f"openai: {{base_url: '{srv.url}', model: sft, concurrency: 2}}}}\n")
        args = ["--params", str(workdir / "params.yaml"), "--section", "candidates",
                "--prompts", str(workdir / "data/create/prompts/prompts.jsonl"), "--truth", "",
                "--out", str(workdir / "out"), "--metrics", str(workdir / "m.json")]
        done = kill_once_cached("from stages.generate import cli; cli()", args, cache, 4)
        assert 4 <= len(done) < len(prompts)
        assert not (workdir / "out" / "candidates.jsonl").exists()
        srv.wait_idle()
        srv.reset()
        run("generate", *args, cwd=workdir)
        assert srv.count == len(prompts) - len(done)        # nothing twice
    cands = read_jsonl(workdir / "out" / "candidates.jsonl")
    assert len(cands) == 2 * len(prompts)                   # nothing lost
    assert [c["messages"][-1]["content"] for c in cands[:2]] == reply({"messages": prompts[0]["messages"], "n": 2})


def test_augment_command_variants_ledger_and_bytes(workdir):
    """The augment command on training rows: every row keeps its reply and gains a variant whose
    instruction is new; rerunning gives the same bytes; a bad rule in params is one line, exit 2."""
    rows = held_rows()
    write_jsonl(workdir / "train.jsonl", rows)
    args = ["--inp", "train.jsonl", "--out", "aug", "--metrics", "aug.json"]
    run("augment", *args, cwd=workdir)
    out = read_jsonl(workdir / "aug" / "train.jsonl")
    first = (workdir / "aug" / "train.jsonl").read_bytes()
    originals = {r["id"]: r for r in rows}
    variants = [r for r in out if r["id"] not in originals]
    assert [r for r in out if r["id"] in originals] == rows
    assert len(variants) == len(rows)                 # per_row 1, and every sample template has rules
    for v in variants:
        src = originals[v["meta"]["augmented_from"]]
        assert v["messages"][-1] == src["messages"][-1] and v["messages"][0]["content"] != src["messages"][0]["content"]
    m = json.loads((workdir / "aug.json").read_text())
    assert m["rows_in"] == len(rows) and m["rows_out"] == len(out) and m["rule_rows_without_rule"] == 0
    run("augment", *args, cwd=workdir)
    assert (workdir / "aug" / "train.jsonl").read_bytes() == first
    with open(workdir / "params.yaml", "a", encoding="utf-8") as fh:
        fh.write("augment: {rules: [{name: mine, pattern: '^(?P<x>.+)$', templates: ['{y}']}]}\n")
    p = subprocess.run([sys.executable, "-m", "stages.augment", *args], cwd=workdir, env=ENV, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().count("\n") == 0 and "augment.rules" in p.stderr and "mine" in p.stderr


def test_self_instruct_command_keeps_novel_instructions(workdir):
    """Against a local server: a reply listing a copy of a seed, a new instruction and its near copy;
    one request fails. Kept: the new instruction, once; the ledger says why each other one went."""
    rows = held_rows()
    write_jsonl(workdir / "seeds.jsonl", rows)
    seed_text = rows[0]["messages"][0]["content"]
    new = "Write a haiku about the sea in the morning light."

    def reply(body):
        return f"1. {seed_text}\n2. {new}\n3. {new.replace('sea', 'ocean')}"

    faults = lambda n, body, attempt: "500" if n == 0 else None  # noqa: E731
    with FakeOpenAI(reply=reply, faults=faults, models=("teacher",)) as srv:
        with open(workdir / "params.yaml", "a", encoding="utf-8") as fh:
            fh.write(f"distill: {{backend: openai, k: 1, temperature: 0.0, cache_dir: cache, "
                     f"openai: {{base_url: '{srv.url}', model: teacher, max_retries: 0, concurrency: 1}}}}\n"
                     "self_instruct: {n_prompts: 3, languages: [en], examples_per_prompt: 4}\n")
        run("self_instruct", "--seeds", "seeds.jsonl", "--out", "si", "--metrics", "si.json", cwd=workdir)
    kept = read_jsonl(workdir / "si" / "prompts.jsonl")
    dropped = read_jsonl(workdir / "si" / "dropped.jsonl")
    assert [r["messages"][0]["content"] for r in kept] == [new]
    assert kept[0]["source"] == "self_instruct" and len(kept[0]["messages"]) == 1
    reasons = sorted(d["reason"] for d in dropped)
    assert reasons.count("too_similar") >= 2          # the seed copy, each time, and the near copy
    m = json.loads((workdir / "si.json").read_text())
    assert m["requests"] == 3 and m["requests_failed"] == 1 and m["kept"] == 1
    assert m["candidates"] == len(kept) + len(dropped) == 6
