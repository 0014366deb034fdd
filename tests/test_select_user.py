"""The select stage as a new user meets it: run as a command (``python -m stages.select --params``).

* a typo in a ``select`` param is one line on stderr that names the key, exit 2, no traceback;
* a run killed with SIGKILL while it writes its outputs never leaves a set of outputs that looks
  complete but mixes two runs (or half a file), and the rerun succeeds with the bytes of a clean run.

Small synthetic rows (40, with ``meta.ifd``/``meta.ppl`` as the perplexity stage leaves them) and a
minimal params file, so each command takes a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
ENV.pop("SFTPIPE_DEBUG", None)

LABELS = ("math", "capital", "translation")


def rows(n: int = 40) -> list[dict]:
    return [{"id": f"s{i // 20}:{i}", "source": f"s{i // 20}", "label": LABELS[i % 3],
             "meta": {"lang": "en" if i % 2 else "zh", "ifd": round(0.2 + (i * 37 % 100) / 90, 4),
                      "ppl": float(3 + i % 7)},
             "messages": [{"role": "user", "content": f"question {i} about {LABELS[i % 3]} number {i * 7}"},
                          {"role": "assistant", "content": " ".join(f"answer{i}-{j}" for j in range(1 + i % 9))}]}
            for i in range(n)]


def params_file(path: Path, select: str) -> Path:
    """The smallest params file the stage accepts (``collect`` is required), with this ``select`` section
    (a YAML flow mapping)."""
    path.write_text(f"collect:\n  sources: [{{path: unused.jsonl, name: unused}}]\nselect: {select}\n",
                    encoding="utf-8")
    return path


class Run:
    """Paths of one run directory: input rows, params, and every output of the stage."""

    def __init__(self, root: Path, inp: Path):
        self.root, self.inp = root, inp
        self.out = root / "data" / "select"
        self.metrics = root / "metrics" / "select.json"
        self.plot = root / "metrics" / "plots" / "select_distribution.csv"
        self.picture = root / "metrics" / "plots" / "select.png"

    def args(self, params: Path) -> list[str]:
        return ["--params", str(params), "--inp", str(self.inp), "--out", str(self.out),
                "--metrics", str(self.metrics), "--plot", str(self.plot), "--picture", str(self.picture)]

    def outputs(self, coverage: bool = True) -> list[Path]:
        files = ["train.jsonl", "dropped.jsonl", "details.json"] + (["coverage.json"] if coverage else [])
        return [self.out / f for f in files] + [self.metrics, self.plot, self.picture]


@pytest.fixture
def run(tmp_path) -> Run:
    inp = tmp_path / "train.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows()), encoding="utf-8")
    return Run(tmp_path / "run", inp)


def stage(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.select", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    for n in needles:
        assert n in err, err


# --------------------------------------------------------------------------- typos in select params

@pytest.mark.parametrize("select, key", [
    ("{methd: top}", "select.methd: unknown key"),
    ("{method: topp}", "select.method:"),
    ("{budget: -3}", "select.budget:"),
    ("{budget: 1.5}", "select.budget:"),
    ("{balance: labels}", "select.balance:"),
    ("{threshold: 1.5}", "select.threshold:"),
    ("{embedding: {method: tfidff}}", "select.embedding.method:"),
    ("{judge: {enabeld: true}}", "select.judge.enabeld: unknown key"),
    ("{weights: {translation: 1.5}}", "select.weights:"),
    # checked against the rows, once they are read
    ("{method: top, budget: 10, scores: {idf: -1}}", "select.scores: unknown score(s) ['idf']"),
    ("{method: top, budget: 10, scores: {judge: 1}}", "select.scores: no row has a 'judge' score"),
    ("{method: top, budget: 10, weights: {translaton: 0.5}}", "select.weights: ['translaton']"),
    ("{budget: 10}", "select.budget is set but select.method is 'all'"),
])
def test_a_typo_in_a_select_param_is_one_line_that_names_the_key(run, tmp_path, select, key):
    proc = stage(run.args(params_file(tmp_path / "params.yaml", select)))
    assert_one_line_error(proc, key)
    assert not run.out.exists() and not run.metrics.exists()        # nothing written


# Bounds on a misspelt or absent score, and a YAML boolean for a number, are errors (were silently
# "no bound" and "1 row").
@pytest.mark.parametrize("select, key", [("{method: top, budget: 10, min: {idf: 0.5}}", "select.min"),
                                         ("{method: top, budget: 10, max: {ifdd: 1.0}}", "select.max"),
                                         ("{method: top, budget: 10, min: {judge: 6}}", "select.min")])
def test_a_bound_on_an_unknown_or_absent_score_is_an_error(run, tmp_path, select, key):
    assert_one_line_error(stage(run.args(params_file(tmp_path / "params.yaml", select))), key)


def test_a_boolean_budget_is_an_error(run, tmp_path):
    params = params_file(tmp_path / "params.yaml", "{method: random, budget: true}")
    assert_one_line_error(stage(run.args(params)), "select.budget")


# --------------------------------------------------------------------------- SIGKILL while writing

KILLER = """
import os, signal, sys
k, root = int(sys.argv[1]), os.path.realpath(sys.argv[2])
real, seen = os.replace, [0]

def replace(src, dst, *a, **kw):  # SIGKILL just before the k-th output file is renamed into place
    if os.path.realpath(os.fspath(dst)).startswith(root):
        seen[0] += 1
        if seen[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **kw)

os.replace = replace
from stages.select import cli
cli(sys.argv[3:])
"""


def complete(path: Path) -> bool:
    """The file parses to the end (a half-written JSON, JSONL, CSV or PNG does not)."""
    data = path.read_bytes()
    if path.suffix == ".json":
        json.loads(data)
    elif path.suffix == ".jsonl":
        for line in data.decode().splitlines():
            json.loads(line)
    elif path.suffix == ".png":
        return data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82")
    else:
        return data.endswith(b"\n")
    return True


def temporaries(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*"))


def test_sigkill_while_writing_leaves_no_complete_looking_mix_and_the_rerun_succeeds(run, tmp_path):
    ids = {r["id"] for r in rows()}
    old = params_file(tmp_path / "all.yaml", "{method: all}")
    new = params_file(tmp_path / "diverse.yaml", "{method: diverse, budget: 12}")
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER, encoding="utf-8")

    clean = Run(tmp_path / "clean", run.inp)                      # the reference: one uninterrupted run
    assert stage(clean.args(new)).returncode == 0
    n_writes = len(clean.outputs())
    assert all(p.is_file() for p in clean.outputs())

    assert stage(run.args(old)).returncode == 0                   # an earlier run, other params: all rows
    for k in range(1, n_writes + 1):
        proc = subprocess.run([sys.executable, str(killer), str(k), str(run.root), *run.args(new)], cwd=REPO,
                              env=ENV, capture_output=True, text=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, (k, proc.stderr[-2000:])
        present = [p for p in run.outputs() if p.is_file()]
        assert len(present) < n_writes, f"killed before write {k}, yet every output is there"
        for p in present:                                         # whatever is there is whole, and this run's
            assert complete(p), p
        if run.out.joinpath("train.jsonl").is_file():
            train = [json.loads(x) for x in run.out.joinpath("train.jsonl").read_text().splitlines()]
            dropped = [json.loads(x) for x in run.out.joinpath("dropped.jsonl").read_text().splitlines()]
            assert len(train) == 12 and {r["id"] for r in train} | {d["id"] for d in dropped} == ids
        if run.metrics.is_file():
            assert json.loads(run.metrics.read_text())["method"] == "diverse"

    assert stage(run.args(new)).returncode == 0                   # the rerun
    assert temporaries(run.root) == []                            # a killed run's temporaries are gone
    for mine, ref in zip(run.outputs(), clean.outputs()):
        assert mine.read_bytes() == ref.read_bytes(), mine
