"""Per-core rate of each data stage at two sizes, its growth exponent, and 100M-row projections.

Run from the repository root:

    PYTHONPATH=. python bench/stage_rates.py                       # 2,500 and 10,000 rows per language, ~6 min
    PYTHONPATH=. python bench/stage_rates.py --rows-per-lang 1000 4000   # quicker

Each stage's core function (the one its ``stages/<name>.py`` calls) runs in this process, in
pipeline order, on the sample generated at each size, with one torch thread and ``num_proc`` 1.
Cost is CPU seconds of this process (user + system, ``resource.getrusage``), not wall time: on a
shared machine a busy neighbour stretches wall time but barely moves CPU time, and CPU seconds per
row is what a per-core rate means. From the two sizes, the growth exponent b of cost ~ rows^b
(1: linear; dedup's semantic pass clusters with k = sqrt(rows) centroids, so it grows faster) is
used to project each stage's CPU hours at 100M rows. The perplexity stage is measured on at most
``--ppl-rows`` rows with a random model of the default base shape (the rate does not depend on
the weights); training is not measured here (bench/train_throughput.py, bench/train_gpu.py).
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import build_assets, command_line, machine, pick, set_threads, setup_env, table  # noqa: E402

setup_env()

TARGET_ROWS = 100_000_000


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime + ch.ru_utime + ch.ru_stime


def timed(fn):
    c, w = cpu_seconds(), time.perf_counter()
    out = fn()
    return out, cpu_seconds() - c, time.perf_counter() - w


def run_size(rows_per_lang: int, ppl_rows: int, work: Path, log=print) -> dict[str, tuple[int, float, float]]:
    """{stage: (rows in, cpu s, wall s)} for the data stages on the sample at this size."""
    from sftpipe.clean import clean_records
    from sftpipe.config import Params, load_params
    from sftpipe.dedup.clusters import dedup_records
    from sftpipe.label_noise import label_noise_records
    from sftpipe.model.loading import load_model, load_tokenizer
    from sftpipe.perplexity import ifd_rows, score_rows
    from sftpipe.select.choose import choose, embed_rows
    from sftpipe.split import split_records

    defaults: Params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    dp = defaults.dedup.model_copy(update={"num_proc": 1})
    out: dict[str, tuple[int, float, float]] = {}
    (records, model_dir), c, w = timed(lambda: build_assets(work, rows_per_lang=rows_per_lang, log=log))
    log(f"  {len(records)} rows collected (sample generation + collect + tokenizer/model build: {c:.1f} CPU s)")
    rows = records
    res, c, w = timed(lambda: clean_records(rows, defaults.clean))
    out["clean"] = (len(rows), c, w)
    rows = res.kept
    res, c, w = timed(lambda: dedup_records(rows, dp))
    out["dedup"] = (len(rows), c, w)
    sem_off = dp.model_copy(update={"semantic": dp.semantic.model_copy(update={"enabled": False})})
    _, c, w = timed(lambda: dedup_records(rows, sem_off))
    out["dedup (semantic off)"] = (len(rows), c, w)
    rows = res.kept
    res, c, w = timed(lambda: label_noise_records(rows, defaults.label_noise))
    out["label_noise"] = (len(rows), c, w)
    rows = res.kept
    pp = defaults.perplexity
    mp = defaults.model.model_copy(update={"name_or_path": str(model_dir), "revision": None})
    model, tok = load_model(mp, precision="fp32").eval(), load_tokenizer(mp)
    sub = pick(rows, ppl_rows)
    scores, c, w = timed(lambda: score_rows(model, tok, sub, pp))
    out["perplexity"] = (len(sub), c, w)
    _, c, w = timed(lambda: ifd_rows(model, tok, sub, pp, scores))
    out["perplexity: ifd pass"] = (len(sub), c, w)
    parts, c, w = timed(lambda: split_records(rows, defaults.split, defaults.dedup)[0])
    out["split"] = (len(rows), c, w)
    train = parts["train"]
    for method in ("diverse", "kcenter"):      # the default (all) does no work; these embed and compare
        sp = defaults.select.model_copy(update={"method": method, "budget": 0.25, "scores": {"length": 1.0}})
        res, c, w = timed(lambda: choose(train, sp, None, embed_rows(train, sp)))
        out[f"select ({method}, budget 0.25)"] = (len(train), c, w)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows-per-lang", type=int, nargs=2, default=[2500, 10000])
    ap.add_argument("--ppl-rows", type=int, default=2000, help="rows scored by the perplexity stage at each size")
    args = ap.parse_args(argv)
    set_threads(1)
    with tempfile.TemporaryDirectory(prefix="sftrates-") as d:   # warm-up: imports, lookup tables, caches
        run_size(100, 50, Path(d), log=lambda *_: None)
    sizes = {}
    for rpl in args.rows_per_lang:
        print(f"size: {rpl} rows per language", flush=True)
        with tempfile.TemporaryDirectory(prefix="sftrates-") as d:
            sizes[rpl] = run_size(rpl, args.ppl_rows, Path(d))
    small, large = (sizes[r] for r in args.rows_per_lang)
    rows = []
    for stage in large:
        n0, c0, _ = small[stage]
        n1, c1, w1 = large[stage]
        b = math.log(c1 / c0) / math.log(n1 / n0) if n1 != n0 and c0 > 0 and c1 > 0 else 1.0
        rate = n1 / c1
        core_h = c1 * (TARGET_ROWS / n1) ** max(b, 1.0) / 3600
        rows.append([stage, n1, f"{c1:.1f}", f"{w1:.1f}", f"{rate:,.0f}", f"{b:.2f}", f"{core_h:,.0f}",
                     f"{core_h / 64:,.1f}"])
    print(table(["stage", "rows", "cpu s", "wall s", "rows/core-s", "growth b", "core-h @100M",
                 "h on 64 cores"], rows,
                title="per-core rates (one torch thread, num_proc 1); projection: cost x (1e8/rows)^max(b,1)"))
    print(machine())
    print(command_line())


if __name__ == "__main__":
    main()
