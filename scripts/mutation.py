"""Mutation run (mutmut 3) over the code the tests must pin down; by hand, outside CI (slow).

    .venv/bin/python -m pip install -c constraints.txt -e ".[mutation]"
    .venv/bin/python scripts/mutation.py                 # every target: ~2,100 mutants, hours on 2 cores
    .venv/bin/python scripts/mutation.py ledger metrics dedup            # ~5 to 10 min each
    .venv/bin/python scripts/mutation.py --sample 20 --seed 1 split      # 20 random mutants per function
    .venv/bin/python scripts/mutation.py --functions x_bounds perplexity # some functions
    .venv/bin/python scripts/mutation.py --mutants 'sftpipe.dedup.clusters.x__survivors__mutmut_1*' dedup
    .venv/bin/python scripts/mutation.py --tests-from HEAD~1 ledger      # baseline: older tests, same code

Every run first runs the selected test files once under mutmut's stats (2 to 5 min); the mutants of
perplexity, evaluation, formatting and label_noise then run model-training fixtures and take ~10 s
to minutes each (a surviving formatting mutant runs most of test_train.py).

Targets: formatting, ledger, split, perplexity, evaluation, metrics (the evaluate metric
modules), dedup (survivor choice: _id_key, _survivors and the part of dedup_records that
builds kept/dropped), label_noise (label_verdicts without the featurization and scoring
block, apply_verdict, label_noise_records: the min_class_size handling and the
drop/flag/relabel actions).

The working tree is never touched: its files (tracked, plus untracked ones git does not
ignore) are copied into a temporary directory and mutmut runs there, with the config in
pyproject.toml's [tool.mutmut] (test files, forkserver, timeouts) and the test plugin
scripts/mutation_plugin.py. Out-of-scope blocks of dedup_records and label_verdicts
get ``# pragma: no mutate start/end`` comments in that copy only. mutmut's stats phase maps
every function to the tests that call it, and each mutant runs only those (-x, cheap first).

Output (--out, default /tmp/sftpipe-mutation-<time>): summary.txt (counts per module and
the survival rate), survivors.txt (every mutant not killed, with its diff), mutmut.log.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# target -> (file, function globs); function globs are mutmut's mangled names ("x_<function>",
# "xǁ<Class>ǁ<method>")
TARGETS: dict[str, list[tuple[str, str]]] = {
    "formatting": [("sftpipe/model/formatting.py", "*")],
    "ledger": [("sftpipe/ledger.py", "*")],
    "split": [("sftpipe/split.py", "*")],
    "perplexity": [("sftpipe/perplexity.py", "*")],
    "evaluation": [("sftpipe/model/evaluation.py", "*")],
    "metrics": [("sftpipe/model/metric_modules/sft_rouge/sft_rouge.py", "*"),
                ("sftpipe/model/metric_modules/sft_bleu/sft_bleu.py", "*"),
                ("sftpipe/model/metric_modules/sft_exact_match/sft_exact_match.py", "*")],
    "dedup": [("sftpipe/dedup/clusters.py", "x__id_key"), ("sftpipe/dedup/clusters.py", "x__survivors"),
              ("sftpipe/dedup/clusters.py", "x_dedup_records")],
    "label_noise": [("sftpipe/label_noise.py", "x_label_verdicts"), ("sftpipe/label_noise.py", "x_apply_verdict"),
                    ("sftpipe/label_noise.py", "x_label_noise_records")],
}

# Statements left unmutated inside in-scope functions: (file, function, first statement, last
# statement), each statement named by the start of its source. Missing anchors stop the run.
OUT_OF_SCOPE = [
    # cluster metrics and the size histogram: counts, not the choice of kept/dropped rows
    ("sftpipe/dedup/clusters.py", "dedup_records", "cluster_sizes = np.bincount", "details = "),
    # featurization and out-of-fold scoring (folds, tf-idf/embeddings, cleanlab)
    ("sftpipe/label_noise.py", "label_verdicts", "folds = ", "issues, quality = find_issues"),
]

# mutmut's statuses: "survived" and "no tests" (no test calls the function) are the mutants the tests
# miss; "suspicious" ones ran oddly; "timeout" counts as caught. "segfault" means the mutant's test run
# was killed by a signal (SIGKILL/SIGSEGV: out of memory, or killed from outside): no verdict, run it again.
ALIVE = ("survived", "no tests", "suspicious")
NO_VERDICT = ("segfault", "not checked")


def sh(cmd, cwd, **kw):
    return subprocess.run(cmd, cwd=cwd, check=True, **{"text": True, **kw})


def copy_tree(dst: Path) -> None:
    files = sh(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], REPO,
               capture_output=True).stdout.split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():          # tracked but deleted in the working tree: skip
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def exclude_statements(root: Path) -> None:
    for file, func, first, last in OUT_OF_SCOPE:
        path = root / file
        src = path.read_text()
        fn = next((n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == func), None)
        if fn is None:
            sys.exit(f"mutation.py: {file}: no function {func}")
        segs = [(n, ast.get_source_segment(src, n)) for n in fn.body]
        start = next((n for n, s in segs if s.startswith(first)), None)
        end = next((n for n, s in segs if s.startswith(last)), None)
        if start is None or end is None or end.end_lineno < start.lineno or end is fn.body[-1]:
            sys.exit(f"mutation.py: {file}:{func}: statements {first!r} .. {last!r} not found (update OUT_OF_SCOPE)")
        lines = src.splitlines(keepends=True)
        indent = " " * start.col_offset
        lines.insert(end.end_lineno, f"{indent}# pragma: no mutate end\n")
        lines.insert(start.lineno - 1, f"{indent}# pragma: no mutate start\n")
        path.write_text("".join(lines))


def mutant_names(root: Path, targets: list[str]) -> dict[str, list[str]]:
    """Mutant names per target, as mutmut generates them (same code, same numbering)."""
    os.chdir(root)   # mutmut reads [tool.mutmut] from the current directory
    from mutmut.mutation.file_mutation import mutate_file_contents
    from mutmut.utils.format_utils import get_mutant_name, mangled_name_from_mutant_name

    cache: dict[str, list[str]] = {}
    out: dict[str, list[str]] = {}
    for t in targets:
        names = []
        for file, glob in TARGETS[t]:
            if file not in cache:
                cache[file] = [get_mutant_name(Path(file), n)
                               for n in mutate_file_contents(file, Path(file).read_text()).mutant_names]
            names += [n for n in cache[file]
                      if fnmatch.fnmatchcase(mangled_name_from_mutant_name(n).rpartition(".")[2], glob)]
        out[t] = names
    os.chdir(REPO)
    return out


def sample(names: list[str], k: int, seed: int) -> list[str]:
    """Up to k mutants per function, drawn with a fixed seed."""
    from mutmut.utils.format_utils import mangled_name_from_mutant_name

    by_fn = defaultdict(list)
    for n in names:
        by_fn[mangled_name_from_mutant_name(n)].append(n)
    rng = random.Random(seed)
    picked = set()
    for fn in sorted(by_fn):
        ms = by_fn[fn]
        picked.update(ms if len(ms) <= k else rng.sample(ms, k))
    return [n for n in names if n in picked]


def results(root: Path) -> dict[str, str]:
    from mutmut.stats import status_by_exit_code

    out = {}
    for meta in (root / "mutants").rglob("*.py.meta"):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            out[name] = status_by_exit_code[code]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", metavar="TARGET", help=f"any of {', '.join(TARGETS)} (default: all)")
    ap.add_argument("--out", type=Path, default=Path(f"/tmp/sftpipe-mutation-{time.strftime('%Y%m%d-%H%M%S')}"))
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--functions", default="",
                    help="comma-separated globs on mutmut's function names (x_score_rows, x_encode*): only these")
    ap.add_argument("--mutants", default="",
                    help="comma-separated globs on full mutant names (sftpipe.dedup.clusters.x__survivors__mutmut_12): only these")
    ap.add_argument("--sample", type=int, default=0, help="at most this many mutants per function (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy (mutmut browse/show there)")
    ap.add_argument("--tests-from", metavar="REV",
                    help="run the tests/ of this git revision against the working tree's code (a baseline)")
    args = ap.parse_args()
    targets = args.targets or list(TARGETS)
    if set(targets) - set(TARGETS):
        ap.error(f"unknown targets {sorted(set(targets) - set(TARGETS))}; choose from {', '.join(TARGETS)}")
    args.out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    work = Path(tempfile.mkdtemp(prefix="sftpipe-mutation-work-"))
    try:
        copy_tree(work)
        if args.tests_from:
            shutil.rmtree(work / "tests")
            archive = sh(["git", "archive", args.tests_from, "tests"], REPO, capture_output=True, text=False).stdout
            sh(["tar", "-x", "-C", str(work)], work, input=archive, text=False)
        exclude_statements(work)
        per_target = mutant_names(work, targets)
        if args.functions:
            globs = args.functions.split(",")
            per_target = {t: [n for n in ns if any(fnmatch.fnmatchcase(n.partition("__mutmut_")[0].rpartition(".")[2], g)
                                                   for g in globs)] for t, ns in per_target.items()}
        if args.mutants:
            globs = args.mutants.split(",")
            per_target = {t: [n for n in ns if any(fnmatch.fnmatchcase(n, g) for g in globs)]
                          for t, ns in per_target.items()}
        if args.sample:
            per_target = {t: sample(ns, args.sample, args.seed) for t, ns in per_target.items()}
        selected = [n for t in targets for n in per_target[t]]
        if not selected:
            sys.exit("mutation.py: no mutant selected")
        print(f"mutation.py: {len(selected)} mutants in {', '.join(targets)}; copy in {work}", flush=True)

        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
               "TOKENIZERS_PARALLELISM": "false", "HF_HOME": str(work / ".hf"),
               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
        env.pop("MUTANT_UNDER_TEST", None)
        with open(args.out / "mutmut.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "mutmut", "run", "--max-children",
                                     str(args.max_children), *selected],
                                    cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in proc.stdout:
                log.write(line)
                log.flush()
                # leave mutmut's spinner and progress redraws to the log
                if "\r" not in line and not ("\u2800" <= line[:1] <= "\u28ff"):
                    print(line, end="", flush=True)
            rc = proc.wait()
        wall = time.time() - t0

        status = results(work)
        missing = [n for n in selected if n not in status]
        if rc != 0 or missing:
            print(f"mutation.py: mutmut exited {rc}; {len(missing)} selected mutants without a result "
                  f"(see {args.out / 'mutmut.log'})", file=sys.stderr)

        from mutmut.utils.format_utils import mangled_name_from_mutant_name

        rows, alive = [], []
        grand = Counter()
        for t in targets:
            by_module = defaultdict(Counter)
            for n in per_target[t]:
                by_module[mangled_name_from_mutant_name(n).rpartition(".")[0]][status.get(n, "not checked")] += 1
                if status.get(n, "not checked") in ALIVE + ("segfault",):
                    alive.append((n, status.get(n, "not checked")))
            for mod, c in sorted(by_module.items()):
                rows.append((t, mod, c))
                grand.update(c)

        cols = ["killed", "survived", "timeout", "no tests", "segfault", "suspicious", "not checked"]
        lines = [f"mutmut {version()}, {len(selected)} mutants, wall {wall / 60:.1f} min, "
                 f"max-children {args.max_children}" + (f", sample {args.sample}/function seed {args.seed}"
                                                        if args.sample else "")
                 + (f", tests from {args.tests_from}" if args.tests_from else ""),
                 "", f"{'target':<12} {'module':<52} {'mutants':>7} " + " ".join(f"{c:>11}" for c in cols)]
        for t, mod, c in rows + [("TOTAL", "", grand)]:
            lines.append(f"{t:<12} {mod:<52} {sum(c.values()):>7} " + " ".join(f"{c[k]:>11}" for k in cols))
        n_alive = sum(grand[k] for k in ALIVE)
        checked = sum(grand.values()) - sum(grand[k] for k in NO_VERDICT)
        lines += ["", f"survival rate (survived + no tests + suspicious, over the mutants with a verdict): "
                      f"{n_alive}/{checked} = {100 * n_alive / max(checked, 1):.1f}%"]
        if grand["segfault"]:
            lines.append(f"{grand['segfault']} mutants without a verdict (test run killed by a signal): "
                         "listed in survivors.txt, run them again")
        if grand["not checked"]:
            lines.append(f"{grand['not checked']} mutants not checked (run interrupted?)")
        summary = "\n".join(lines) + "\n"
        (args.out / "summary.txt").write_text(summary)

        diffs = mutant_diffs(work, [n for n, _ in alive], env)
        with open(args.out / "survivors.txt", "w") as f:
            f.write(summary + "\n")
            for n, st in sorted(alive):
                f.write(f"=== {n}: {st}\n{diffs.get(n, '').strip()}\n\n")
        print("\n" + summary + f"\nsurvivors with diffs: {args.out / 'survivors.txt'}")
        if rc != 0 or missing:
            sys.exit(1)
    finally:
        if args.keep:
            print(f"mutation.py: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def mutant_diffs(work: Path, names: list[str], env: dict) -> dict[str, str]:
    """`mutmut show` for each mutant, in one process."""
    code = ("import json, sys\n"
            "from mutmut.mutation.diff_apply import get_diff_for_mutant\n"
            "print(json.dumps({n: get_diff_for_mutant(n) for n in json.load(sys.stdin)}))\n")
    if not names:
        return {}
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, input=json.dumps(names),
                         capture_output=True, text=True)
    if out.returncode == 0:
        return json.loads(out.stdout)
    return {n: subprocess.run([sys.executable, "-m", "mutmut", "show", n], cwd=work, env=env,
                              capture_output=True, text=True).stdout for n in names}


def version() -> str:
    from importlib.metadata import version as v
    return v("mutmut")


if __name__ == "__main__":
    main()
