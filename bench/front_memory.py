"""Peak memory and throughput of collect and clean on millions of generated rows: streaming vs in memory.

Input: ``--rows`` N rows as a user's source file (JSONL, ``{"id", "messages"}``), written block by
block from ``bench/dedup_memory.py``'s generator (mixed English/Chinese rows, copies, templated
rows, a system prompt on 10%, 0.05% empty rows that collect quarantines); on top, a repairable
text defect (sftpipe.sample.defects.clean_defect: mojibake, invisible or control characters,
HTML, whitespace, PII) in the answer of 5% of rows, and 0.05% rows whose answer is only markup,
which clean drops. Files are cached under ``--data-dir`` by N and seed.

Each measurement runs in a freshly spawned process, which reports its own peak RSS (``VmHWM``)
and wall time, files included:

* ``collect-stream``: sources.collect_to (what the stage runs); ``collect-memory``: the old stage,
  sources.collect + io.write_jsonl twice + io.write_json;
* ``clean-stream``: clean.stream.clean_jsonl (what the stage runs) on collect's data.jsonl;
  ``clean-memory``: the old stage, io.read_jsonl + clean_records + ledger.write_filter_outputs;

and the outputs of the two paths are compared byte for byte. Params: params.yaml's defaults
(``CollectParams``/``CleanParams``). Threads: run with OMP_NUM_THREADS=1.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/front_memory.py --rows 300000 1000000
"""

from __future__ import annotations

import argparse
import filecmp
import multiprocessing
import os
import random
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.dedup_memory import BLOCK, _hwm_mb, block_records  # noqa: E402
from sftpipe.io import dumps  # noqa: E402
from sftpipe.sample import defects  # noqa: E402

DEFECT_SHARE = 0.05
MARKUP_ONLY_SHARE = 0.0005
OUTPUTS = {"collect": ("data.jsonl", "quarantine.jsonl", "metrics.json"),
           "clean": ("kept.jsonl", "dropped.jsonl", "details.json", "metrics.json")}


def _source_row(rec: dict, rng: random.Random) -> dict:
    """A generated record as a user's row: its id and messages, the answer sometimes broken."""
    msgs = [dict(m) for m in rec["messages"]]
    ans, lang = msgs[-1], rec["meta"]["lang"]
    x = rng.random()
    if x < MARKUP_ONLY_SHARE and ans["content"]:
        ans["content"] = "<br><p></p>"
    elif x < DEFECT_SHARE and ans["content"]:
        kinds = [k for k in defects.CLEAN_TYPES if k != "mojibake" or not ans["content"].isascii()]
        ans["content"] = defects.clean_defect(rng, rng.choice(kinds), lang, ans["content"])[0]
    return {"id": rec["id"], "messages": msgs}


def write_source(path: Path, rows: int, seed: int) -> None:
    """``rows`` source rows into ``path``, one generated block at a time."""
    tmp = path.with_suffix(".part")
    rng = random.Random(f"front-memory:{seed}")
    pool: list = []
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for start in range(0, rows, BLOCK):
            for rec in block_records(start // BLOCK, min(BLOCK, rows - start), seed, pool, start):
                fh.write(dumps(_source_row(rec, rng)) + "\n")
    os.replace(tmp, path)


def child(mode: str, inp: Path, out: Path) -> dict:
    """One measurement in this (fresh) process."""
    from sftpipe.config import CleanParams, CollectParams, Source
    from sftpipe.io import read_jsonl, write_json, write_jsonl

    t = time.perf_counter()
    if mode.startswith("collect"):
        from sftpipe.collect import sources
        p = CollectParams(sources=[Source(path=str(inp), name="gen")])
        if mode == "collect-stream":
            m = sources.collect_to(p, out / "data.jsonl", out / "quarantine.jsonl", out / "metrics.json")
        else:
            res = sources.collect(p)
            write_jsonl(out / "data.jsonl", res.records)
            write_jsonl(out / "quarantine.jsonl", res.quarantine)
            m = res.metrics()
            write_json(out / "metrics.json", m)
    elif mode == "clean-stream":
        from sftpipe.clean.stream import clean_jsonl
        m, _ = clean_jsonl(inp, out, out / "metrics.json", CleanParams())
    elif mode == "clean-memory":
        from sftpipe.clean import clean_records
        from sftpipe.ledger import write_filter_outputs
        records = read_jsonl(inp)
        m = write_filter_outputs("clean", records, clean_records(records, CleanParams()), out, out / "metrics.json")
    else:
        raise ValueError(mode)
    return {"mode": mode, "rows": m["rows_in"], "secs": time.perf_counter() - t, "peak_mb": _hwm_mb(), "metrics": m}


def run_child(mode: str, inp: Path, out: Path) -> dict:
    """:func:`child` in a freshly spawned process (its own peak RSS), which reports back."""
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(child, mode, inp, out).result()


def source_file(data: Path, n: int, seed: int) -> Path:
    """The cached source file of ``n`` rows, generated first if it is not there."""
    src = data / f"source-{n}-seed{seed}.jsonl"
    if not src.exists():
        t = time.perf_counter()
        write_source(src, n, seed)
        print(f"generated {n} rows ({src.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s", flush=True)
    return src


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--paths", nargs="+", choices=("memory", "stream"), default=["memory", "stream"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default="/tmp/frontmem")
    ap.add_argument("--keep", action="store_true", help="keep the generated files and outputs")
    args = ap.parse_args(argv)

    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"collect and clean params: params.yaml defaults; OMP_NUM_THREADS={threads}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    results = []
    for n in sorted(args.rows):
        src = source_file(data, n, args.seed)
        for stage in ("collect", "clean"):
            # clean reads what collect wrote (the same bytes either way when both paths ran)
            inp = src if stage == "collect" else data / f"run-collect-{args.paths[-1]}-{n}" / "data.jsonl"
            for path in args.paths:
                r = run_child(f"{stage}-{path}", inp, data / f"run-{stage}-{path}-{n}")
                results.append(r)
                m = r["metrics"]
                print(f"{r['mode']:15s} {n:>9d} rows  {r['secs']:7.0f} s  {r['rows'] / r['secs']:7.0f} rows/s  "
                      f"peak RSS {r['peak_mb']:7.0f} MB  out {m['kept']} kept, "
                      f"{m.get('quarantined', m.get('dropped'))} {'quarantined' if stage == 'collect' else 'dropped'}",
                      flush=True)
            if len(args.paths) == 2:
                a, b = (data / f"run-{stage}-{p}-{n}" for p in args.paths)
                same = all(filecmp.cmp(a / f, b / f, shallow=False) for f in OUTPUTS[stage])
                print(f"{stage:15s} {n:>9d} rows  stream vs memory outputs byte-identical: {'yes' if same else 'NO'}",
                      flush=True)
    print(f"\n{'stage, path':15s} {'rows':>10s} {'seconds':>8s} {'rows/s':>8s} {'peak RSS MB':>12s}")
    for r in results:
        print(f"{r['mode']:15s} {r['rows']:>10d} {r['secs']:8.0f} {r['rows'] / r['secs']:8.0f} {r['peak_mb']:12.0f}")
    print("\nOMP_NUM_THREADS=1 PYTHONPATH=. python bench/front_memory.py --rows " + " ".join(map(str, args.rows)))
    for x in [] if args.keep else data.glob("run-*"):
        shutil.rmtree(x, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
