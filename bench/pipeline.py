"""Pipeline overhead: per-stage wall time, no-op `dvc repro`, and CLI import time.

Run from the repository root, after setup:

    python bench/pipeline.py                 # overhead only (needs a completed `dvc repro`)
    python bench/pipeline.py --stages        # also force-rerun each stage once and time it (~6 min)

Every figure is also given as a ratio to a baseline measured in the same run:
the CLI and `dvc repro` against a bare `python -c pass` start.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed(cmd: list[str], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", action="store_true", help="force-rerun every stage once and time it")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    bare = timed([sys.executable, "-c", "pass"], args.repeats)
    cli = timed([str(BIN / "sftpipe"), "--help"], args.repeats)
    print(f"python start            {bare:6.2f} s")
    print(f"sftpipe --help          {cli:6.2f} s   ({cli / bare:.1f}x a bare python start; target <= 1.5 s)")
    rows = []
    if args.stages:
        order = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
        for stage in order:
            t = time.perf_counter()
            subprocess.run([str(BIN / "dvc"), "repro", "--force", "--single-item", stage], cwd=ROOT, check=True,
                           capture_output=True)
            rows.append((stage, time.perf_counter() - t))
        print("\n| stage | wall s |\n|---|---|")
        for stage, s in rows:
            print(f"| {stage} | {s:.1f} |")
        print(f"| **total** | **{sum(s for _, s in rows):.1f}** |")
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=ROOT, capture_output=True, text=True)
    if "up to date" not in status.stdout:
        sys.exit("run `dvc repro` first: the no-op measurement needs an up-to-date pipeline")
    noop = timed([str(BIN / "dvc"), "repro"], args.repeats)
    print(f"\nno-op dvc repro         {noop:6.2f} s   ({noop / bare:.1f}x a bare python start; target <= 3 s)")


if __name__ == "__main__":
    main()
