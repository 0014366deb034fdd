"""The whole DVC pipeline on a tiny config, in a throwaway copy of the repository.

Covers: `dvc repro` end to end; every input id accounted for exactly once, stage by
stage; a second `dvc repro` reruns nothing (`dvc status` is clean); changing only
`lora.r` reruns only train and evaluate; and a training run killed with SIGKILL
resumes from its last checkpoint on the next `dvc repro`, ending with the same model as an
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {
    "sample": {"rows_per_lang": 150, "tool_rows_per_lang": 20, "reasoning_rows_per_lang": 10},
    # big enough to learn something in seconds: SFT must beat base on test loss and ROUGE-L
    "base": {"corpus_rows": 600, "vocab_size": 600, "hidden_size": 64, "num_layers": 2, "num_heads": 2,
             "intermediate_size": 128, "seq_len": 64, "batch_size": 16, "steps": 150, "lr": 0.01},
    "train": {"max_steps": 60, "lr": 0.01, "batch_size": 8, "save_steps": 20, "eval_steps": 20, "logging_steps": 10},
    "evaluate": {"max_rows": 32, "max_new_tokens": 8, "batch_size": 16},
}
BAD_SOURCE = "\n".join([
    json.dumps({"instruction": "Say hi", "output": "hi"}),
    "{broken json",
    json.dumps({"instruction": "no output here"}),
    json.dumps({"instruction": ["not", "a", "string"], "output": "x"}),
]) + "\n"


def env() -> dict:
    e = dict(os.environ)
    e.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
             PATH=f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}", DVC_NO_ANALYTICS="1")
    return e


def run(cmd: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, shell=True, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def set_params(repo: Path, updates: dict) -> None:
    p = yaml.safe_load((repo / "params.yaml").read_text())
    for group, values in updates.items():
        p.setdefault(group, {}).update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False, allow_unicode=True))


def make_repo(root: Path) -> Path:
    """A fresh copy of the tracked files, on the tiny config, with one extra source of bad rows."""
    repo = root / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
    (repo / "data" / "sources" / "bad.jsonl").write_text(BAD_SOURCE)   # a user's own file, where collect tracks it
    set_params(repo, TINY)
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["collect"]["sources"].append({"path": "data/sources/bad.jsonl", "name": "extra_bad", "format": "auto"})
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False, allow_unicode=True))
    run("git init -q && git add -A && git commit -qm init", repo)
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("pipeline"))


def lock_outs(lock_file: Path) -> dict[str, str]:
    """md5 of every data and model output recorded in a dvc.lock (metrics files carry timings)."""
    lock = yaml.safe_load(lock_file.read_text())
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])
            if not o["path"].startswith("metrics/") and o["path"] != "models/checkpoints"}


def read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_repro_end_to_end_accounts_for_every_row(repo):
    out = run("dvc repro", repo)
    assert {"sample", "base", "collect", "dedup", "label_noise", "perplexity", "split", "report", "train",
            "evaluate"} <= ran_stages(out.stdout)
    d = repo / "data"
    collected = read(d / "collected" / "data.jsonl")
    quarantine = read(d / "collected" / "quarantine.jsonl")
    assert [q["reason"] for q in quarantine if q["source"] == "extra_bad"] == ["malformed_json", "missing_field",
                                                                             "bad_type"]
    ids = [r["id"] for r in collected]
    assert len(ids) == len(set(ids))
    # stage by stage: kept + dropped == input
    stage_in = ids
    for stage in ("dedup", "label_noise", "perplexity"):
        kept = [r["id"] for r in read(d / stage / "kept.jsonl")]
        dropped = [r["id"] for r in read(d / stage / "dropped.jsonl")]
        assert Counter(kept) + Counter(dropped) == Counter(stage_in), stage
        m = json.loads((repo / "metrics" / f"{stage}.json").read_text())
        assert m["rows_in"] == len(stage_in) and m["kept"] + m["dropped"] == m["rows_in"]
        stage_in = kept
    parts = {s: [r["id"] for r in read(d / "split" / f"{s}.jsonl")] for s in ("train", "validation", "test")}
    split_dropped = [r["id"] for r in read(d / "split" / "dropped.jsonl")]
    assert Counter(sum(parts.values(), [])) + Counter(split_dropped) == Counter(stage_in)
    # every collected id ends in exactly one place
    final = sum(parts.values(), []) + split_dropped + [
        r["id"] for s in ("dedup", "label_noise", "perplexity") for r in read(d / s / "dropped.jsonl")]
    assert Counter(final) == Counter(ids)
    ev = json.loads((repo / "metrics" / "eval.json").read_text())
    assert set(ev) >= {"base", "sft", "delta"} and {"rougeL", "bleu", "chrf", "exact_match", "loss"} <= set(ev["sft"])
    # fine-tuning helped, even on the tiny config: lower test loss, better overlap with the references
    base, sft = ev["base"], ev["sft"]
    assert sft["loss"] < base["loss"] - 0.1 and sft["perplexity"] < base["perplexity"], ev
    # (not chrF: in 8 new tokens the base model's stock "I would like to invite you to" scores
    # character n-grams against the long invitation references)
    # (exact match only not below base: in 8 tokens on 32 rows this tiny model may get none exactly right)
    assert sft["rougeL"] > base["rougeL"] and sft["exact_match"] >= base["exact_match"], ev
    assert ev["sft"]["tool_rows"] > 0 and "tool_call_accuracy" in ev["base"]     # tool rows are scored
    assert ev["delta"]["rougeL"] == pytest.approx(sft["rougeL"] - base["rougeL"], abs=1e-4)
    test_rows = read(d / "split" / "test.jsonl")[:TINY["evaluate"]["max_rows"]]
    preds = read(d / "eval" / "predictions.jsonl")
    assert ev["rows"] == len(preds) == len(test_rows) and [p["id"] for p in preds] == [r["id"] for r in test_rows]
    assert [p["reference"] for p in preds] == [r["messages"][-1]["content"] for r in test_rows]
    assert sum(bool(p["sft"]) for p in preds) >= len(preds) // 2, "the SFT model generates text"
    assert (repo / "models" / "sft" / "adapter_model.safetensors").is_file()
    assert (repo / "metrics" / "data_card.md").read_text().startswith("# Data card")
    shutil.copy(repo / "dvc.lock", repo.parent / "first.lock")


def test_a_second_fresh_copy_gives_identical_outputs(repo, tmp_path):
    """Same inputs, same params: byte-identical data and (on CPU) model outputs, by dvc.lock md5."""
    other = make_repo(tmp_path)
    run("dvc repro", other)
    first = lock_outs(repo.parent / "first.lock")
    second = lock_outs(other / "dvc.lock")
    assert set(first) >= {"data/raw", "data/collected", "data/dedup", "data/label_noise", "data/perplexity",
                          "data/split", "models/base", "models/sft", "data/eval"}
    assert first == second


def test_second_repro_reruns_nothing(repo):
    status = run("dvc status dvc.yaml", repo)     # the main pipeline (the opt-in create/dvc.yaml never ran here)
    assert "up to date" in status.stdout, status.stdout
    again = run("dvc repro", repo)
    assert not ran_stages(again.stdout), again.stdout


def test_changing_lora_r_reruns_only_train_and_evaluate(repo):
    set_params(repo, {"lora": {"r": 4}})
    out = run("dvc repro", repo)
    assert ran_stages(out.stdout) == {"train", "evaluate"}


def test_sigkill_during_training_then_repro_resumes(repo):
    set_params(repo, {"train": {"max_steps": 150, "save_steps": 5, "eval_steps": 1000, "logging_steps": 5}})
    ckpt = repo / "models" / "checkpoints"
    stamp = ckpt / "fingerprint.json"
    old_stamp = stamp.read_text() if stamp.is_file() else None  # the lora.r=4 run's checkpoints are still here

    def new_checkpoints():
        fresh = stamp.is_file() and stamp.read_text() != old_stamp  # a new run wiped the other run's checkpoints
        return list(ckpt.glob("checkpoint-*/trainer_state.json")) if fresh else []
    # dvc itself (not a shell) leads the process group, so wait() reaps it and its rwlock entry is stale
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dvc"), "repro", "train"], cwd=repo, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not new_checkpoints():
            time.sleep(0.2)
        assert new_checkpoints(), "no checkpoint appeared"
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    saved = max(int(p.parent.name.split("-")[1]) for p in ckpt.glob("checkpoint-*/trainer_state.json"))
    assert saved < 150
    out = run("dvc repro train", repo)
    assert "resuming from" in out.stderr + out.stdout
    summary = json.loads((repo / "metrics" / "train.json").read_text())
    assert summary["resumed_from_step"] >= 5 and summary["global_step"] == 150
    # the resumed model is the uninterrupted run's, bit for bit (a finished run leaves no checkpoint,
    # so the forced rerun starts from step 0)
    resumed = lock_outs(repo / "dvc.lock")["models/sft"]
    run("dvc repro -f -s train", repo)
    assert json.loads((repo / "metrics" / "train.json").read_text())["resumed_from_step"] == 0
    assert lock_outs(repo / "dvc.lock")["models/sft"] == resumed
