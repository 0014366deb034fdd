"""Speed of the ``diverse`` and ``kcenter`` selections (sftpipe.select.methods) vs naive loops.

Input: synthetic embeddings, ``--rows`` x ``--dims`` (100k x 128), seeded: cluster centres, each
row a centre plus Gaussian noise of its cluster's spread, L2-normalised to float32; cluster sizes
Zipf-like; uniform random scores. Two data sets:

* typical:   2000 clusters, a fifth of them tight (spread 0.02-0.3: members' cosine mostly > 0.9,
             near-duplicates, so ``too_similar`` fires), the rest loose (0.4-1.5). Diverse admits
             k rows within the first ~1.1k rows of the walk; the time goes into the evidence.
* dup-heavy: 500 clusters, all tight. Diverse walks all the rows, rejecting nearly all of them
             against the admitted ones, and runs out before k: the worst case of the walk.

Runs (k = ``--k`` = 1000, threshold 0.9, one group, no quota):

* ours:            ``select("diverse")`` and ``select("kcenter")`` on all rows, everything included
                   (walk order, the blocked products, the evidence of every dropped row).
* numpy per row:   diverse the obvious half-vectorised way: one matrix-vector product of each
                   candidate against the admitted rows (and of each ``budget`` row, for its nearest
                   chosen row), on all rows.
* numpy per pick:  kcenter the plain way: one matrix-vector product over all rows per pick, updating
                   the running highest similarity (and its argmax, the evidence), on all rows.
* naive per pair:  both algorithms with one ``np.dot`` per pair of rows, in Python (diverse: each
                   candidate against every admitted row, no early exit since the exact nearest row is
                   part of the output; kcenter: each row's running highest similarity after every
                   pick); ~1 µs a dot product, so on the first ``--baseline-rows`` rows (10k) of the
                   typical set, same k, and ours is timed on the same subset.

Every baseline must choose the same rows as ours and name the same nearest row for at least 99.9%
of the dropped rows, or else part from ours only at a float32 near-tie (asserted, see ``agree``):
BLAS products and one dot product at a time round differently, and on near-duplicates two rows can
be as far from the chosen set to 1e-7.
Ours and each baseline run interleaved (``bench/_common.interleave``), after an unrecorded warm-up
(a cheap one for the per-pair loops); ratios are per repeat, median [min..max].

Threads: ``select`` runs BLAS on one thread by default (``threads=1``, see its docstring); the
baselines run under the same limit (``--threads``, default 1) so the ratios compare algorithms.
``--threads 2`` shows what two threads give (ours with ``threads=2``, the baselines with 2 too).

    PYTHONPATH=. python bench/select_speed.py [--rows 100000] [--k 1000] [--baseline-rows 10000] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from bench._common import (REPO, OtherLoad, command_line, interleave, median_of, ratios, spread,  # noqa: E402
                           table)
import sftpipe.select.methods as methods  # noqa: E402
from sftpipe.select.methods import select  # noqa: E402

DATASETS = {"typical": dict(clusters=2000, tight=0.2), "dup-heavy": dict(clusters=500, tight=1.0)}


def make_data(n: int, d: int, clusters: int, tight: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    is_tight = rng.random(clusters) < tight
    spread_ = np.where(is_tight, rng.uniform(0.02, 0.3, clusters), rng.uniform(0.4, 1.5, clusters))
    p = 1.0 / np.arange(1, clusters + 1) ** 0.8
    assign = rng.choice(clusters, size=n, p=p / p.sum())
    X = centres[assign] + spread_[assign, None] * rng.normal(size=(n, d)) / np.sqrt(d)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), rng.random(n)


# --------------------------------------------------------------------------- baselines

def _order(score):
    return np.argsort(-score, kind="stable").tolist()


def naive_diverse(X, score, k, thr):
    """One dot product per pair. Returns (chosen, {dropped row: nearest admitted row})."""
    rows = [X[i] for i in range(len(X))]
    admitted, nearest = [], {}
    order = _order(score)
    stop = len(order)
    for p, i in enumerate(order):
        if len(admitted) == k:
            stop = p
            break
        x, best, arg = rows[i], -2.0, -1
        for j in admitted:
            s = float(np.dot(x, rows[j]))
            if s > best:
                best, arg = s, j
        if best >= thr:
            nearest[i] = arg
        else:
            admitted.append(i)
    for i in order[stop:]:
        x, best, arg = rows[i], -2.0, -1
        for j in admitted:
            s = float(np.dot(x, rows[j]))
            if s > best:
                best, arg = s, j
        nearest[i] = arg
    return admitted, nearest


def rowwise_diverse(X, score, k, thr):
    """One matrix-vector product per candidate against the admitted rows."""
    A = np.empty((k, X.shape[1]), dtype=np.float32)
    admitted, nearest = [], {}
    order = _order(score)
    stop = len(order)
    for p, i in enumerate(order):
        m = len(admitted)
        if m == k:
            stop = p
            break
        if m:
            s = A[:m] @ X[i]
            j = int(s.argmax())
            if s[j] >= thr:
                nearest[i] = admitted[j]
                continue
        A[m] = X[i]
        admitted.append(i)
    for i in order[stop:]:
        nearest[i] = admitted[int((A[:len(admitted)] @ X[i]).argmax())] if admitted else -1
    return admitted, nearest


def naive_kcenter(X, score, k):
    """Running highest similarity to the chosen set, one dot product per (row, pick)."""
    n = len(X)
    rows = [X[i] for i in range(n)]
    start = _order(score)[0]
    chosen, taken = [start], {start}
    near = [float(np.dot(rows[i], rows[start])) for i in range(n)]
    near_arg = [start] * n
    while len(chosen) < min(k, n):
        best, pick = float("inf"), -1
        for i in range(n):
            if near[i] < best and i not in taken:
                best, pick = near[i], i
        chosen.append(pick)
        taken.add(pick)
        x = rows[pick]
        for i in range(n):
            s = float(np.dot(rows[i], x))
            if s > near[i]:
                near[i], near_arg[i] = s, pick
    return chosen, {i: near_arg[i] for i in range(n) if i not in taken}


def perpick_kcenter(X, score, k):
    """One matrix-vector product over all rows per pick (the running highest similarity and its argmax)."""
    n = len(X)
    start = _order(score)[0]
    best = X @ X[start]
    near = np.full(n, start, dtype=np.int64)
    key = best.copy()
    key[start] = np.inf
    chosen = [start]
    while len(chosen) < min(k, n):
        j = int(np.argmin(key))
        chosen.append(j)
        sim = X @ X[j]
        up = sim > best
        best[up] = sim[up]
        near[up] = j
        np.maximum(key, sim, out=key)
        key[j] = np.inf
    taken = set(chosen)
    return chosen, {i: int(near[i]) for i in range(n) if i not in taken}


def ours(method, X, score, k, thr, threads):
    sel = select(method, k=k, order_score=score, X=X, groups=None, quota=None, threshold=thr, threads=threads)
    return sel.chosen.tolist(), {i: r["nearest"] for i, r in sel.reasons.items() if "nearest" in r}, sel


def agree(a, b, what, X, method, thr):
    """Whether two runs chose the same rows, as a phrase. Where they part, the rows at that point must
    be a float32 near-tie (asserted): kcenter, two rows equally far from the chosen set; diverse, a row
    whose similarity to the admitted set is the threshold, both to 1e-5 (float64 recomputation): BLAS
    and one dot at a time round differently. With the same rows, the share of dropped rows given the
    same nearest row is printed (and must be >= 99.9%)."""
    if a[0] != b[0]:
        i = next((i for i, (x, y) in enumerate(zip(a[0], b[0])) if x != y), min(len(a[0]), len(b[0])))
        prefix = X[a[0][:i]].astype(np.float64)
        rows = [r[0][i] for r in (a, b) if i < len(r[0])]
        sims = [float((prefix @ X[r].astype(np.float64)).max()) if i else -1.0 for r in rows]
        gap = abs(sims[0] - sims[1]) if method == "kcenter" else min(abs(s - thr) for s in sims)
        assert gap < 1e-5, f"{what}: the chosen rows differ at pick {i} (rows {rows}, similarities {sims})"
        return f"the same first {i} rows, then a float32 near-tie (gap {gap:.1e})"
    same = sum(a[1][i] == b[1].get(i) for i in a[1]) / max(1, len(a[1]))
    assert same >= 0.999, f"{what}: the nearest rows agree for only {same:.2%} of the dropped rows"
    return f"the same rows; the same nearest row for {same:.2%} of the dropped rows"


def timed(fn, threads):
    def run():
        with threadpool_limits(threads):
            t = time.perf_counter()
            out = fn()
            return {"seconds": time.perf_counter() - t, "_out": out}
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=128)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--baseline-rows", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3, help="repeats of ours vs numpy per row / per pick")
    ap.add_argument("--naive-repeats", type=int, default=1, help="repeats of ours vs the per-pair loops")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads, for ours and the baselines")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    where = Path(methods.__file__).resolve()
    if REPO not in where.parents:
        raise SystemExit(f"sftpipe is imported from {where}, not from {REPO}; run with PYTHONPATH=. from {REPO}")
    k, thr, th = args.k, args.threshold, args.threads
    print(f"{args.rows} x {args.dims} embeddings; k {k}, threshold {thr}; BLAS threads {th}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    rows_out, notes, headline = [], [], {}

    with OtherLoad() as load:
        for name, spec in DATASETS.items():
            X, score = make_data(args.rows, args.dims, spec["clusters"], spec["tight"], args.seed)
            print(f"\n{name}: {spec['clusters']} clusters, {spec['tight']:.0%} of them tight")
            res = interleave({
                "ours diverse": timed(lambda: ours("diverse", X, score, k, thr, th), th),
                "numpy per row diverse": timed(lambda: rowwise_diverse(X, score, k, thr), th),
                "ours kcenter": timed(lambda: ours("kcenter", X, score, k, thr, th), th),
                "numpy per pick kcenter": timed(lambda: perpick_kcenter(X, score, k), th),
            }, args.repeats)
            for method, base in (("diverse", "numpy per row diverse"), ("kcenter", "numpy per pick kcenter")):
                a, b = res[f"ours {method}"], res[base]
                same = agree(a[-1]["_out"], b[-1]["_out"], f"{name}: {method} vs {base}", X, method, thr)
                for run_name, r in ((f"ours {method}", a), (base, b)):
                    secs = median_of(r, "seconds")
                    rows_out.append([name, run_name, args.rows, secs, args.rows / secs,
                                     spread(ratios(b, a, "seconds")) if r is b else ""])
                det = a[-1]["_out"][2].details
                headline[(name, method)] = median_of(a, "seconds")
                extra = (f"walked {det['walked']} rows in {det['blocks']} blocks ({det['resolved_in_block']} "
                         f"resolved one by one within a block)" if method == "diverse" else
                         f"{det['folds']} folds, {det['rows_checked']} rows checked, {det['fallbacks']} "
                         f"fallbacks to a plain argmin, radius {det['radius']}")
                notes.append(f"{name}, ours {method}: {det['chosen']} chosen, {extra}, reasons {det['reasons']}; "
                             f"vs {base}: {same}")

            if name != "typical":
                continue
            nb = min(args.baseline_rows, args.rows)
            Xs, ss = X[:nb], score[:nb]
            tiny = min(nb, 300)
            for method in ("diverse", "kcenter"):
                if method == "diverse":
                    naive = lambda: naive_diverse(Xs, ss, k, thr)  # noqa: E731
                    warm = lambda: naive_diverse(Xs[:tiny], ss[:tiny], 20, thr)  # noqa: E731
                else:
                    naive = lambda: naive_kcenter(Xs, ss, k)  # noqa: E731
                    warm = lambda: naive_kcenter(Xs[:tiny], ss[:tiny], 20)  # noqa: E731
                fast = timed(lambda method=method: ours(method, Xs, ss, k, thr, th), th)
                r = interleave({f"ours {method}": fast, f"naive per pair {method}": timed(naive, th)},
                               args.naive_repeats, warmup={f"ours {method}": fast,
                                                           f"naive per pair {method}": timed(warm, th)})
                a, b = r[f"ours {method}"], r[f"naive per pair {method}"]
                same = agree(a[-1]["_out"], b[-1]["_out"], f"{method} vs naive per pair", Xs, method, thr)
                rows_out.append([name, f"ours {method}", nb, median_of(a, "seconds"),
                                 nb / median_of(a, "seconds"), ""])
                rows_out.append([name, f"naive per pair {method}", nb, median_of(b, "seconds"),
                                 nb / median_of(b, "seconds"), spread(ratios(b, a, "seconds"))])
                notes.append(f"{name}, first {nb} rows, {method}: vs naive per pair: {same}; "
                             f"reasons {a[-1]['_out'][2].details['reasons']}")

    print()
    print(table(["data", "run", "rows", "seconds", "rows/s", "baseline / ours"], rows_out,
                title=f"k = {k}, BLAS threads {th}; seconds: median of the repeats; ratio: per repeat, "
                      f"median [min..max]"))
    print()
    for line in notes:
        print(line)
    print(load.summary())
    worst = max(headline.values())
    print(f"target: {k} of {args.rows} rows well under a minute: {'PASS' if worst < 30 else 'FAIL'} ("
          + ", ".join(f"{m} {d} {s:.2f}s" for (d, m), s in headline.items()) + ")")
    print(command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
