"""engine: ray vs engine: local, on one machine: dedup and perplexity rows/s on the same input, one run.

Input: the generated sample (``--rows-per-lang``), collected like the pipeline does, and a random model of
the default base shape (bench/_common.build_assets). Every configuration runs in this process against a
local Ray started once here, interleaved with its local baseline:

* dedup: ``dedup_records`` (the stage's compute, params.yaml's defaults: edits, slot check and the semantic
  pass on) on the sample, with the local engine at num_proc 1 (the baseline) and 2, and with ``RayEngine``
  at ``dedup.ray.workers`` 1 and 2. With Ray the signatures, bands, pair checks and the paraphrase pass's
  group checks are tasks; the driver keeps reading the rows, the grouping, union-find and the survivors.
  "driver CPU s" is this process's CPU time in the run (``time.process_time``): with the local engine at
  num_proc 1 all of the work, with Ray what stays on the driver. Then the part the engine changes,
  ``find_duplicates`` (exact groups, signatures, LSH bands, checks, union-find), on ``--texts`` generated
  near-duplicate texts (sftpipe.sample.neardup, as bench/dedup_throughput.py), same four configurations;
* perplexity: ``score_rows`` on ``--ppl-rows`` rows with the model in this process at ``--threads``
  torch threads (the baseline), and on a ``RayModelPool`` of 1 and 2 actors of 1 CPU (one thread)
  each. The actors' start (each loads the model) is timed once, apart: the rows/s are steady state.
  Both pools stay up to be interleaved, so the local Ray gets ``--num-cpus`` + 1 logical CPUs (3 actors);
  only one configuration runs at a time, so no more than ``--num-cpus`` cores are ever busy.

Every Ray result is checked against its baseline: the dedup result's rows, ledger, metrics and details
(the stage's file contents) and the perplexity floats must be identical, or the bench stops.
Ratios are rows/s over the baseline's, median of the per-repeat ratios [range]. Peak RSS is this
process's (the driver's); Ray's workers and actors are other processes and not in it.

    PYTHONPATH=. python bench/ray_engine.py [--rows-per-lang 2400] [--ppl-rows 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (OtherLoad, assets, command_line, interleave, machine, median_of, peak_rss_mb,  # noqa: E402
                     pick, ratios, set_threads, setup_env, spread, table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows-per-lang", type=int, default=2400, help="sample size (SampleParams.rows_per_lang)")
    ap.add_argument("--ppl-rows", type=int, default=2000, help="rows scored in the perplexity part")
    ap.add_argument("--texts", type=int, default=50000, help="texts of the find_duplicates part")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-cpus", type=int, default=2, help="cores for the local Ray (it gets one more logical CPU)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the local perplexity baseline")
    ap.add_argument("--assets", help="reuse (or build into) this directory: sample rows and model")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")     # transformers' loading bars, here and in actors
    setup_env()
    set_threads(args.threads)

    import ray

    from sftpipe.config import DedupParams, DedupRayParams, ModelParams, PerplexityParams, PerplexityRayParams, \
        RayParams
    from sftpipe.dedup.clusters import dedup_records, find_duplicates
    from sftpipe.dedup.ray_engine import RayEngine, ray_session
    from sftpipe.model.loading import load_model, load_tokenizer
    from sftpipe.perplexity import RayModelPool, score_rows
    from sftpipe.sample import neardup

    records, model_dir, _tmp = assets(args)
    print(machine())
    rss = {"after building the input": peak_rss_mb()}
    dump = lambda r: json.dumps([r.kept, r.dropped, r.extra_metrics, r.details], sort_keys=True)  # noqa: E731
    n = len(records)
    lines = []

    t0 = time.perf_counter()
    with ray_session(RayParams(num_cpus=args.num_cpus + 1), "bench"), OtherLoad() as load:
        ray_start = time.perf_counter() - t0
        print(f"local Ray started in {ray_start:.1f}s: {ray.cluster_resources().get('CPU', 0):g} logical CPUs")

        # ------------------------------------------------------------------ dedup
        P = DedupParams()
        want = dump(dedup_records(records, P))

        def dedup_run(params, engine=None):
            def run():
                t, c = time.perf_counter(), time.process_time()
                res = dedup_records(records, params, engine=engine)
                s, cpu = time.perf_counter() - t, time.process_time() - c
                if dump(res) != want:
                    raise SystemExit("dedup on Ray differs from the local engine")
                return {"seconds": s, "rows_per_s": n / s, "driver_cpu_s": cpu}
            run.engine = engine
            return run

        runs = {"local num_proc 1": dedup_run(P), "local num_proc 2": dedup_run(P.model_copy(update={"num_proc": 2})),
                "ray 1 worker": dedup_run(P, RayEngine(DedupRayParams(workers=1))),
                "ray 2 workers": dedup_run(P, RayEngine(DedupRayParams(workers=2)))}
        print(f"dedup: {n} rows, {args.repeats} repeats")
        d = interleave(runs, args.repeats)
        base = d["local num_proc 1"]
        lines.append(table(["dedup (dedup_records)", "rows/s", "vs local num_proc 1", "driver CPU s"],
                           [[k, median_of(v, "rows_per_s"), spread(ratios(v, base, "rows_per_s")),
                             f"{median_of(v, 'driver_cpu_s'):.2f}"] for k, v in d.items()],
                           title=f"dedup, {n} rows, outputs identical: yes"))
        rss["after dedup"] = peak_rss_mb()

        texts = neardup.generate(args.texts, seed=0, dup_share=0.1, max_rate=0.1).texts
        ref = find_duplicates(texts, P)

        def fd_run(params, engine=None):
            def run():
                t, c = time.perf_counter(), time.process_time()
                res = find_duplicates(texts, params, engine=engine)
                s, cpu = time.perf_counter() - t, time.process_time() - c
                if not (np.array_equal(res.component, ref.component) and np.array_equal(res.pairs, ref.pairs)
                        and np.array_equal(res.similarity, ref.similarity) and res.slot == ref.slot):
                    raise SystemExit("find_duplicates on Ray differs from the local engine")
                return {"seconds": s, "rows_per_s": len(texts) / s, "driver_cpu_s": cpu}
            return run

        print(f"find_duplicates: {len(texts)} texts, {args.repeats} repeats")
        f = interleave({k: fd_run(P.model_copy(update={"num_proc": 2}) if k == "local num_proc 2" else P,
                                  getattr(runs[k], "engine", None)) for k in runs}, args.repeats)
        lines.append(table(["find_duplicates", "rows/s", "vs local num_proc 1", "driver CPU s"],
                           [[k, median_of(v, "rows_per_s"), spread(ratios(v, f["local num_proc 1"], "rows_per_s")),
                             f"{median_of(v, 'driver_cpu_s'):.2f}"] for k, v in f.items()],
                           title=f"find_duplicates (the engine's part), {len(texts)} texts, clusters, pairs and "
                                 f"similarities identical: yes"))
        rss["after find_duplicates"] = peak_rss_mb()

        # ------------------------------------------------------------------ perplexity
        rows = pick(records, args.ppl_rows)
        mp = ModelParams(name_or_path=str(model_dir))
        p = PerplexityParams()
        model, tok = load_model(mp).eval(), load_tokenizer(mp)
        want_scores = score_rows(model, tok, rows, p)
        pools, start_s = {}, {}
        for actors in (1, 2):
            t = time.perf_counter()
            pools[actors] = RayModelPool(mp, p.model_copy(update={"ray": PerplexityRayParams(actors=actors)}),
                                         RayParams())
            score_rows(pools[actors], tok, rows[:actors * p.batch_size], p)   # every actor has loaded the model
            start_s[actors] = time.perf_counter() - t

        def ppl_run(m):
            def run():
                t = time.perf_counter()
                got = score_rows(m, tok, rows, p)
                s = time.perf_counter() - t
                if got != want_scores:
                    raise SystemExit("perplexity on Ray differs from the local model")
                return {"seconds": s, "rows_per_s": len(rows) / s}
            return run

        print(f"perplexity: {len(rows)} rows, {args.repeats} repeats")
        q = interleave({f"local ({args.threads} thread{'s' * (args.threads > 1)})": ppl_run(model),
                        "ray 1 actor": ppl_run(pools[1]), "ray 2 actors": ppl_run(pools[2])}, args.repeats)
        for pool in pools.values():
            pool.close()
        qbase = next(iter(q.values()))
        lines.append(table(["perplexity (score_rows)", "rows/s", "vs local", "actors' start"],
                           [[k, median_of(v, "rows_per_s"), spread(ratios(v, qbase, "rows_per_s")),
                             f"{start_s[int(k.split()[1])]:.1f}s" if k.startswith("ray") else "-"]
                            for k, v in q.items()],
                           title=f"perplexity, {len(rows)} rows, scores identical (every float): yes"))
        rss["at the end"] = peak_rss_mb()

    print()
    print("\n\n".join(lines))
    print(f"\nlocal Ray start: {ray_start:.1f}s (once per stage run, not in the rows/s above)")
    print("driver peak RSS (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
    print(load.summary())
    print(command_line())


if __name__ == "__main__":
    main()
