"""Peak memory and throughput of the dedup stage on millions of generated rows: streaming vs in memory.

Input: ``--rows`` N mixed canonical records written to a JSONL file block by block (never all N
in memory): alpaca-sized English and Chinese rows from sftpipe.sample.neardup (each block has 10%
edited variants of its own rows), cut into a prompt (the first sentence) and a response; on top,
per block, exact copies (1%), typo copies (1%, sftpipe.sample.dupbench.typo at 2/5/8%) of this
block's or earlier blocks' rows, templated task rows (1%, sftpipe.sample.tasks: one-slot
near-misses the slot check keeps apart), a system prompt on 10% of rows and empty rows (0.05%).
Files are cached under ``--data-dir`` by N and seed.

Each measurement runs in a fresh child process (``--child``), which reports its own peak RSS
(``VmHWM``; the file generation happens in another process) and wall time:

* ``stream``: sftpipe.dedup.stream.dedup_jsonl, input file -> output files, everything included;
* ``ray`` (with ``--ray``): the same streamed stage with ``dedup.engine: ray`` (a local Ray of ``--ray-cpus``
  CPUs started in the child before the clock starts; its start is reported apart), outputs compared byte
  for byte with ``stream``. The child is Ray's driver: its peak RSS and CPU seconds are the driver's, the
  workers are other processes (not counted);
* ``memory``: the stage's in-memory path, io.read_jsonl + clusters.dedup_records +
  ledger.write_filter_outputs (by default at the smallest N only, ``--memory-rows``), and the
  outputs of the two are compared byte for byte.

Params: params.yaml's dedup section as ``DedupParams()`` gives it (the paraphrase pass on), or with
``semantic.enabled: false`` (``--no-paraphrases``, the figures before the paraphrase pass streamed);
``--semantic-rows`` times the paraphrase pass alone, in memory, on the first rows of the smallest
file. Threads: run with OMP_NUM_THREADS=1.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/dedup_memory.py --rows 1000000 3000000 10000000 --memory-rows 200000
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from sftpipe.config import DedupParams, SemanticDedupParams  # noqa: E402
from sftpipe.io import dumps  # noqa: E402
from sftpipe.sample import dupbench, neardup  # noqa: E402
from sftpipe.sample.tasks import CATEGORIES, GENERATORS, SYSTEM, WEIGHTS  # noqa: E402

BLOCK = 50_000
SHARES = {"exact": 0.01, "typo": 0.01, "task": 0.01, "empty": 0.0005}


def params() -> DedupParams:
    return DedupParams(semantic=SemanticDedupParams(enabled=os.environ.get("DEDUP_MEMORY_PARAPHRASES", "1") == "1"))


def _split(text: str, lang: str) -> tuple[str, str]:
    """The first sentence as the prompt, the rest as the response (as dupbench's long rows)."""
    cut = text.find(". ") + 1 if lang == "en" else text.find("。") + 1
    cut = cut if 0 < cut < len(text) - 1 else len(text) // 3
    return text[:cut].strip(), text[cut:].strip()


def _record(rid: str, prompt: str, response: str, lang: str, rng: random.Random) -> dict:
    msgs = [{"role": "system", "content": SYSTEM[lang]}] if rng.random() < 0.1 else []
    msgs += [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return {"id": rid, "source": "gen", "label": None, "messages": msgs, "meta": {"lang": lang}}


def block_records(b: int, n: int, seed: int, pool: list, start: int) -> list[dict]:
    """Block ``b`` of the generated rows: ``n`` records, ids from ``start``; ``pool`` (earlier
    blocks' rows, updated here) feeds the copies that cross blocks."""
    rng = random.Random(f"dedup-memory:{seed}:{b}")
    k = {kind: int(round(n * share)) for kind, share in SHARES.items()}
    base = n - sum(k.values())
    data = neardup.generate(base, seed=seed * 1_000_003 + b)
    rows = [(*_split(t, lang), lang) for t, lang in zip(data.texts, data.langs)]
    cats = list(CATEGORIES)
    for _ in range(k["task"]):
        lang = rng.choice(("en", "zh"))
        item = GENERATORS[rng.choices(cats, [WEIGHTS[c] for c in cats])[0]](rng, lang)
        rows.append((item.prompt, item.response, lang))
    for _ in range(k["exact"]):
        rows.append(rng.choice(pool) if pool and rng.random() < 0.5 else rng.choice(rows))
    for _ in range(k["typo"]):
        p, r, lang = rng.choice(pool) if pool and rng.random() < 0.5 else rng.choice(rows)
        rate = rng.choice(dupbench.RATES)
        rows.append((dupbench.typo(rng, p, rate), dupbench.typo(rng, r, rate), lang))
    rows += [("", "", rng.choice(("en", "zh"))) for _ in range(k["empty"])]
    rng.shuffle(rows)
    pool.extend(rng.sample(rows, min(len(rows), 200)))
    del pool[:-5000]
    return [_record(f"gen:{start + i:09d}", p, r, lang, rng) for i, (p, r, lang) in enumerate(rows)]


def write_rows(path: Path, rows: int, seed: int) -> None:
    """Generate ``rows`` records into ``path`` (JSONL), one block at a time."""
    tmp = path.with_suffix(".part")
    pool: list = []
    done = 0
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for b in range(0, (rows + BLOCK - 1) // BLOCK):
            n = min(BLOCK, rows - done)
            for rec in block_records(b, n, seed, pool, done):
                fh.write(dumps(rec))
                fh.write("\n")
            done += n
    os.replace(tmp, path)


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(mode: str, inp: Path, out: Path, limit: int = 0) -> dict:
    """One measurement in this (fresh) process."""
    from sftpipe.dedup import sketch
    p = params()
    sketch._tables()                  # per-process lookup tables (~0.3 s), outside the timing
    stats: dict = {}
    if mode == "ray":
        from sftpipe.config import DedupRayParams, RayParams
        from sftpipe.dedup.ray_engine import RayEngine
        from sftpipe.ray_session import ray_session
        session = ray_session(RayParams(num_cpus=int(os.environ["DEDUP_MEMORY_RAY_CPUS"])), "bench")
        t = time.perf_counter()
        session.__enter__()
        stats["ray_start_s"] = round(time.perf_counter() - t, 1)
    t, cpu = time.perf_counter(), time.process_time()
    if mode in ("stream", "ray"):
        from sftpipe.dedup.stream import dedup_jsonl
        engine = RayEngine(DedupRayParams(), RayParams()) if mode == "ray" else None
        m, _ = dedup_jsonl(inp, out / "out", out / "metrics.json", p, tmp_dir=out, stats=stats, engine=engine)
    elif mode == "memory":
        from sftpipe.dedup.clusters import dedup_records
        from sftpipe.io import read_jsonl
        from sftpipe.ledger import write_filter_outputs
        records = read_jsonl(inp)
        stats["read_s"] = round(time.perf_counter() - t, 1)
        res = dedup_records(records, p)
        stats["dedup_s"] = round(time.perf_counter() - t - stats["read_s"], 1)
        m = write_filter_outputs("dedup", records, res, out / "out", out / "metrics.json")
    elif mode == "semantic":
        from itertools import islice

        from sftpipe.dedup.clusters import _semantic
        from sftpipe.io import iter_jsonl
        records = list(islice(iter_jsonl(inp), limit))
        stats["read_s"] = round(time.perf_counter() - t, 1)
        pairs, _, _ = _semantic(records, DedupParams())
        m = {"rows_in": len(records), "semantic_pairs": len(pairs)}
    else:
        raise ValueError(mode)
    secs, cpu = time.perf_counter() - t, time.process_time() - cpu
    if mode == "ray":
        session.__exit__(None, None, None)
    return {"mode": mode, "rows": m["rows_in"], "secs": secs, "cpu_s": round(cpu, 1), "peak_mb": _hwm_mb(),
            "metrics": m, "stats": stats}


def run_child(mode: str, inp: Path, out: Path, timeout: float, limit: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", mode, "--input", str(inp), "--out", str(out), "--limit", str(limit)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{mode} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_outputs(a: Path, b: Path) -> bool:
    return all(filecmp.cmp(a / "out" / f, b / "out" / f, shallow=False)
               for f in ("kept.jsonl", "dropped.jsonl", "details.json")) and \
        filecmp.cmp(a / "metrics.json", b / "metrics.json", shallow=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    ap.add_argument("--memory-rows", type=int, nargs="*", default=None,
                    help="sizes to run the in-memory path at too (default: the smallest of --rows)")
    ap.add_argument("--semantic-rows", type=int, nargs="*", default=[],
                    help="also time the semantic pass alone, in memory, on this many rows of the smallest file")
    ap.add_argument("--no-paraphrases", action="store_true", help="the paraphrase pass off (semantic.enabled false)")
    ap.add_argument("--ray", action="store_true", help="also the streamed stage on a local Ray (dedup.engine: ray)")
    ap.add_argument("--ray-cpus", type=int, default=2, help="CPUs of that local Ray")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default="/tmp/dedupmem")
    ap.add_argument("--timeout", type=float, default=6 * 3600, help="seconds per child")
    ap.add_argument("--keep", action="store_true", help="keep the generated files and outputs")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, Path(args.input), Path(args.out), args.limit)))
        return 0

    os.environ["DEDUP_MEMORY_PARAPHRASES"] = "0" if args.no_paraphrases else "1"      # the children read it
    os.environ["DEDUP_MEMORY_RAY_CPUS"] = str(args.ray_cpus)
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    mem_rows = set(args.memory_rows if args.memory_rows is not None else [min(args.rows)])
    p = params()
    print(f"dedup params: params.yaml defaults, paraphrase pass {'on' if p.semantic.enabled else 'off'} (edits {'on' if p.edits.enabled else 'off'}, "
          f"slot check {'on' if p.slot_check else 'off'}, keep {p.keep}, prefer_typical {p.prefer_typical}); "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    results = []
    for n in sorted(args.rows):
        inp = data / f"rows-{n}-seed{args.seed}.jsonl"
        if not inp.exists():
            t = time.perf_counter()
            write_rows(inp, n, args.seed)
            print(f"generated {n} rows ({inp.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s",
                  flush=True)
        for mode in (["memory"] if n in mem_rows else []) + ["stream"] + (["ray"] if args.ray else []):
            r = run_child(mode, inp, data / f"run-{mode}-{n}", args.timeout)
            results.append(r)
            m = r["metrics"]
            print(f"{mode:7s} {n:>10d} rows  {r['secs']:8.0f} s  {n / r['secs']:8.0f} rows/s  driver CPU "
                  f"{r['cpu_s']:7.0f} s  peak RSS {r['peak_mb']:8.0f} MB  dropped {m['dropped_by_reason']}  stats {r['stats']}", flush=True)
        if args.ray:
            same = same_outputs(data / f"run-stream-{n}", data / f"run-ray-{n}")
            print(f"        {n:>10d} rows  ray vs local engine outputs byte-identical: {'yes' if same else 'NO'}",
                  flush=True)
        if n in mem_rows:
            same = same_outputs(data / f"run-memory-{n}", data / f"run-stream-{n}")
            print(f"        {n:>10d} rows  stream vs memory outputs byte-identical: {'yes' if same else 'NO'}",
                  flush=True)
    for k in args.semantic_rows:
        inp = data / f"rows-{min(args.rows)}-seed{args.seed}.jsonl"
        r = run_child("semantic", inp, data / f"run-semantic-{k}", args.timeout, limit=k)
        print(f"semantic pass alone (in memory, tfidf) {k:>9d} rows  {r['secs']:7.0f} s  peak RSS "
              f"{r['peak_mb']:7.0f} MB  ({r['stats']['read_s']} s of it reading)  pairs {r['metrics']['semantic_pairs']}",
              flush=True)
    print(f"\n{'path':8s} {'rows':>10s} {'seconds':>8s} {'rows/s':>8s} {'driver CPU s':>12s} {'peak RSS MB':>12s}")
    for r in results:
        print(f"{r['mode']:8s} {r['rows']:>10d} {r['secs']:8.0f} {r['rows'] / r['secs']:8.0f} {r['cpu_s']:12.0f} "
              f"{r['peak_mb']:12.0f}")
    print("\nOMP_NUM_THREADS=1 PYTHONPATH=. python bench/dedup_memory.py " + " ".join(
        ["--rows", *map(str, args.rows)] + (["--memory-rows", *map(str, sorted(mem_rows))]
                                            if args.memory_rows is not None else [])
        + (["--semantic-rows", *map(str, args.semantic_rows)] if args.semantic_rows else [])
        + (["--no-paraphrases"] if args.no_paraphrases else [])
        + (["--ray", "--ray-cpus", str(args.ray_cpus)] if args.ray else [])))
    if not args.keep:
        import shutil
        for x in data.glob("run-*"):
            shutil.rmtree(x, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
