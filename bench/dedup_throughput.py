"""Throughput of near-duplicate removal: ours vs rensa, datasketch's bulk path and a naive loop.

Input: generated alpaca-sized rows, half English (60-80 words), half Chinese
(100-150 characters), 10% of them edited variants of other rows
(sftpipe.sample.neardup). Everything is timed end to end, texts -> clusters
(exact groups, normalize, shingle, MinHash, LSH, exact-Jaccard check,
union-find), in this process, after a warm-up that builds the per-process
lookup tables (reported separately as "setup").

* ours:       sftpipe.dedup.clusters.find_duplicates, num_proc 1 and 2, with the
              params.yaml defaults (DedupParams()), so with ``dedup.edits`` (the
              character-signature typo pass) and the slot check when those are on;
              also num_proc 1 with edits off, for reference;
* baseline A: per distinct text, one datasketch ``MinHash(num_perm, seed,
              hashfunc=shingle_hash)`` with ``update()`` per shingle (the
              reference normalize/shingles), inserted into ``MinHashLSH`` with
              the same bands/rows and queried for candidates, then the same
              exact-Jaccard check and union-find. It runs on the first
              ``--baseline-rows`` rows (it is ~1 ms a row) and its rows/s is
              compared with ours on the same rows. Baseline A is the word-MinHash
              stage only, so it is checked against that stage of ours' run: its
              candidate pairs (``signature == 0``) and the clusters of those that
              reach the threshold (before the edits pass and the slot check) must be
              identical (asserted);
* rensa:      the peers are fed the same Python shingles as baseline A (the
              reference normalize/shingles), then: ``RMinHash.from_token_sets``
              (Rust, its own token hash), ``RMinHashLSH`` with ours' bands x rows
              (``insert_many``, ``query_all``). rensa needs num_perm divisible by
              the bands, so its sketch has bands * rows slots (17 x 7 = 119 of 128:
              the slots ours computes but never bands; with ``verify`` they are
              never read), which only saves it work;
* datasketch bulk: ``MinHash.bulk`` over the shingles as UTF-8 bytes, num_perm and
              seed as ours, ``hashfunc=xxhash.xxh32_intdigest`` (a C hash: ~2x its
              default SHA-1), inserted with ``MinHashLSH.insertion_session()`` at
              ours' bands x rows, then one ``query`` per row;
              both peers then check each candidate pair against the exact Jaccard of
              its two shingle sets and take connected components (``lsh.union_find``),
              like baseline A. They run on ``--peer-rows`` rows (default: all), end to
              end (texts -> clusters, shingling included); ours is compared on the
              same rows. Their hashes differ from ours, so clusters are not asserted
              equal: the rows each marks as duplicates are printed next to ours'.

``--memory-scan`` reruns ours (num_proc 1) in a fresh process at 10k, 100k and
1M rows and reports peak RSS and its growth over the RSS after generating the
data. Timings on a shared machine vary; the load average is printed.

    python bench/dedup_throughput.py [--rows 100000] [--baseline-rows 5000] [--peer-rows N] [--memory-scan]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from sftpipe.dedup import clusters as dedup  # noqa: E402
from sftpipe.sample import neardup as bd  # noqa: E402
from sftpipe.dedup import lsh, sketch  # noqa: E402
from sftpipe.config import DedupParams  # noqa: E402


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak RSS of this process image (VmHWM; ru_maxrss would carry the parent's peak over exec)."""
    return _status_mb("VmHWM")


def setup(p: DedupParams) -> float:
    t = time.perf_counter()
    sketch._tables()
    sketch._pre_table(p.normalize.nfkc, p.normalize.lowercase)
    sketch._fold_table(p.normalize.punctuation, p.normalize.digits)
    dedup.lsh_params(p)
    from sftpipe.dedup import edits
    edits._content_classes()
    dedup.find_duplicates(["warm up", "热身"], p.model_copy(update={"num_proc": 1}))
    return time.perf_counter() - t


def _spin(_):
    s = 0
    for i in range(3_000_000):
        s += i
    return s


def machine_parallelism() -> float:
    """Speedup of 2 processes over 1 on plain Python work: what this machine gives right now."""
    import multiprocessing as mp
    t = time.perf_counter()
    for i in range(4):
        _spin(i)
    serial = time.perf_counter() - t
    with mp.get_context("fork").Pool(2) as pool:
        t = time.perf_counter()
        pool.map(_spin, range(4), chunksize=1)
        return serial / (time.perf_counter() - t)


def run_ours(texts, p, repeats: int):
    best, res = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        res = dedup.find_duplicates(texts, p)
        best = min(best, time.perf_counter() - t)
    return best, res


def baseline_a(texts: list[str], p: DedupParams):
    """The naive datasketch pipeline; returns (components, candidate pairs)."""
    from datasketch import MinHash, MinHashLSH
    bands, rows = dedup.lsh_params(p)
    exact_rep = dedup.exact_groups(texts)
    uniq = np.flatnonzero(exact_rep == np.arange(len(texts)))
    index = MinHashLSH(num_perm=p.num_perm, params=(bands, rows))
    sketches, sets = [], []
    for k, i in enumerate(uniq.tolist()):
        norm = sketch.normalize(texts[i], p.normalize)
        char = sketch.use_char_shingles(norm, p.shingle)
        seen: list[int] = []

        def hashfunc(s, seen=seen):      # keeps each hash for the exact check, without hashing twice
            h = sketch.shingle_hash(s)
            seen.append(h)
            return h
        m = MinHash(num_perm=p.num_perm, seed=p.seed, hashfunc=hashfunc)
        for sh in sketch.shingles(norm, char, p.char_ngram if char else p.word_ngram):
            m.update(sh)
        sets.append(sorted(set(seen)))
        if seen:                         # a text with no shingle joins nothing
            index.insert(k, m)
        sketches.append(m)
    pairs = sorted({(min(k, j), max(k, j)) for k, m in enumerate(sketches) if sets[k]
                    for j in index.query(m) if j != k})
    pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    flat = np.array([h for s in sets for h in s], dtype=np.uint32)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
    sim = lsh.exact_jaccard(pairs, flat, offsets) if p.verify else None
    comp = lsh.union_find(len(uniq), pairs[sim >= p.threshold])
    row_of = np.full(len(texts), -1)
    row_of[uniq] = np.arange(len(uniq))
    return uniq[comp[row_of[exact_rep]]], uniq[pairs]


def word_stage(res, threshold: float):
    """Ours' word-MinHash stage of a run: (components, candidate pairs) from its word pairs
    alone (``signature == 0``) that reach ``threshold``, before the edits pass and the slot check."""
    n = len(res.component)
    w = res.signature == 0
    edges = np.concatenate([res.pairs[w][res.similarity[w] >= threshold],
                            np.stack([np.arange(n), res.exact_rep], axis=1)])
    return lsh.union_find(n, edges), res.pairs[w]


def _reference_shingles(texts: list[str], p: DedupParams):
    """Exact groups, the distinct rows, and the shingles of each (reference normalize/shingles, as baseline A)."""
    exact_rep = dedup.exact_groups(texts)
    uniq = np.flatnonzero(exact_rep == np.arange(len(texts)))
    out = []
    for i in uniq.tolist():
        norm = sketch.normalize(texts[i], p.normalize)
        char = sketch.use_char_shingles(norm, p.shingle)
        out.append(sketch.shingles(norm, char, p.char_ngram if char else p.word_ngram))
    return exact_rep, uniq, out


def _check_and_cluster(exact_rep, uniq, shingles, keys, candidates, p: DedupParams, estimate):
    """Candidates (per queried row, its LSH hits) -> (components per text, candidate pairs as text
    indices): each pair kept when the exact Jaccard of its shingle sets (``estimate(k, j)``, the
    MinHash estimate, without ``verify``) reaches the threshold, then union-find, as baseline A."""
    pairs = sorted({(min(k, j), max(k, j)) for k, hits in zip(keys, candidates) for j in hits if j != k})
    pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    if p.verify:
        sets: dict[int, set] = {}

        def of(k):
            s = sets.get(k)
            if s is None:
                s = sets[k] = set(shingles[k])
            return s
        sim = np.array([len(of(k) & of(j)) / len(of(k) | of(j)) for k, j in pairs.tolist()], dtype=np.float64)
    else:
        sim = np.array([estimate(k, j) for k, j in pairs.tolist()], dtype=np.float64)
    comp = lsh.union_find(len(uniq), pairs[sim >= p.threshold])
    row_of = np.full(len(exact_rep), -1)
    row_of[uniq] = np.arange(len(uniq))
    return uniq[comp[row_of[exact_rep]]], uniq[pairs]


def peer_rensa(texts: list[str], p: DedupParams):
    """rensa R-MinHash + its LSH; returns (components, candidate pairs)."""
    from rensa import RMinHash, RMinHashLSH
    bands, rows = dedup.lsh_params(p)
    exact_rep, uniq, sh = _reference_shingles(texts, p)
    ms = RMinHash.from_token_sets(sh, bands * rows, p.seed)   # rensa: num_perm % bands == 0
    keys = [k for k, s in enumerate(sh) if s]                  # a text with no shingle joins nothing
    index = RMinHashLSH(p.threshold, bands * rows, bands)
    index.insert_many([ms[k] for k in keys])
    hits = index.query_all([ms[k] for k in keys])              # keys of insert_many: positions in `keys`
    candidates = [[keys[j] for j in h] for h in hits]
    return _check_and_cluster(exact_rep, uniq, sh, keys, candidates, p, lambda k, j: ms[k].jaccard(ms[j]))


def peer_datasketch_bulk(texts: list[str], p: DedupParams):
    """datasketch MinHash.bulk + MinHashLSH insertion session; returns (components, candidate pairs)."""
    import xxhash
    from datasketch import MinHash, MinHashLSH
    bands, rows = dedup.lsh_params(p)
    exact_rep, uniq, sh = _reference_shingles(texts, p)
    ms = MinHash.bulk([[s.encode() for s in row] for row in sh], num_perm=p.num_perm, seed=p.seed,
                      hashfunc=xxhash.xxh32_intdigest)
    keys = [k for k, s in enumerate(sh) if s]
    index = MinHashLSH(num_perm=p.num_perm, params=(bands, rows))
    with index.insertion_session() as session:
        for k in keys:
            session.insert(k, ms[k], check_duplication=False)
    candidates = [index.query(ms[k]) for k in keys]
    return _check_and_cluster(exact_rep, uniq, sh, keys, candidates, p, lambda k, j: ms[k].jaccard(ms[j]))


def n_dups(component: np.ndarray) -> int:
    """Rows a dedup would drop: those not the first (smallest index) of their cluster."""
    return int((component != np.arange(len(component))).sum())


def child(rows: int, seed: int, num_proc: int) -> None:
    """One memory-scan point, in a fresh process: prints a JSON line."""
    p = DedupParams(num_proc=num_proc)
    t = time.perf_counter()
    data = bd.generate(rows, seed=seed)
    gen_s = time.perf_counter() - t
    setup_s = setup(p)
    before = rss_mb()
    t = time.perf_counter()
    res = dedup.find_duplicates(data.texts, p)
    secs = time.perf_counter() - t
    print(json.dumps({"rows": rows, "gen_s": gen_s, "setup_s": setup_s, "secs": secs,
                      "rss_before_mb": before, "peak_mb": peak_rss_mb(),
                      "clusters": int((np.bincount(res.component) > 1).sum())}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--baseline-rows", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peer-rows", type=int, default=0,
                    help="rows for rensa and datasketch bulk (default: all --rows); ours is compared on the same rows")
    ap.add_argument("--repeats", type=int, default=2, help="runs of ours per setting; the best counts")
    ap.add_argument("--memory-scan", action="store_true")
    ap.add_argument("--scan-rows", default="10000,100000,1000000")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child-procs", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.seed, args.child_procs)
        return 0

    p = DedupParams()
    bands, rws = dedup.lsh_params(p)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; params: num_perm {p.num_perm}, "
          f"word/char n {p.word_ngram}/{p.char_ngram}, threshold {p.threshold}, bands x rows {bands}x{rws}, "
          f"verify {p.verify}; edits (character-signature typo pass) {'ON' if p.edits.enabled else 'off'}"
          + (" (" + ", ".join(f"{k} {v}" for k, v in p.edits.model_dump().items() if k != "enabled") + ")"
             if p.edits.enabled else "")
          + f", slot check {'on' if p.slot_check else 'off'}")
    t = time.perf_counter()
    data = bd.generate(args.rows, seed=args.seed)
    print(f"generated {args.rows} rows in {time.perf_counter() - t:.1f}s; setup (tables, LSH params) "
          f"{setup(p):.2f}s once per process")

    rows_out = []
    ours = {}
    for procs in (1, 2):
        q = p.model_copy(update={"num_proc": procs})
        secs, res = run_ours(data.texts, q, args.repeats)
        ours[procs] = (secs, res)
        rows_out.append((f"ours, num_proc={procs}", args.rows, secs, len(res.pairs),
                         int((np.bincount(res.component) > 1).sum())))
    assert np.array_equal(ours[1][1].component, ours[2][1].component), "num_proc changed the clusters"
    if p.edits.enabled:
        q = p.model_copy(update={"num_proc": 1, "edits": p.edits.model_copy(update={"enabled": False})})
        secs, res = run_ours(data.texts, q, args.repeats)
        rows_out.append(("ours, num_proc=1, edits off", args.rows, secs, len(res.pairs),
                         int((np.bincount(res.component) > 1).sum())))

    # peers, end to end on the same rows as ours (num_proc 1, defaults)
    n_peer = min(args.peer_rows or args.rows, args.rows)
    psub = data.texts[:n_peer]
    if n_peer == args.rows:
        secs_op, res_op = ours[1]
    else:
        secs_op, res_op = run_ours(psub, p.model_copy(update={"num_proc": 1}), args.repeats)
        rows_out.append((f"ours, num_proc=1, {n_peer} rows", n_peer, secs_op, len(res_op.pairs),
                         int((np.bincount(res_op.component) > 1).sum())))
    peers = {}
    for name, fn in (("rensa", peer_rensa), ("datasketch bulk", peer_datasketch_bulk)):
        best_s = float("inf")
        for _ in range(args.repeats):               # best of --repeats, as ours
            t = time.perf_counter()
            comp, pairs = fn(psub, p)
            best_s = min(best_s, time.perf_counter() - t)
        peers[name] = (best_s, comp, pairs)
        rows_out.append((f"{name} (peer)", n_peer, best_s, len(pairs), int((np.bincount(comp) > 1).sum())))
    t = time.perf_counter()
    _reference_shingles(psub, p)
    secs_sh = time.perf_counter() - t

    sub = data.texts[:args.baseline_rows]
    t = time.perf_counter()
    comp_a, pairs_a = baseline_a(sub, p)
    secs_a = time.perf_counter() - t
    secs_o, res_o = run_ours(sub, p.model_copy(update={"num_proc": 1}), args.repeats)
    comp_w, pairs_w = word_stage(res_o, p.threshold)
    assert np.array_equal(comp_a, comp_w), "baseline A and ours' word stage disagree on the clusters"
    assert np.array_equal(pairs_a, pairs_w), "baseline A and ours' word stage disagree on the candidate pairs"
    rows_out.append(("baseline A (datasketch loop)", len(sub), secs_a, len(pairs_a),
                     int((np.bincount(comp_a) > 1).sum())))
    rows_out.append(("ours, num_proc=1, same rows", len(sub), secs_o, len(res_o.pairs),
                     int((np.bincount(res_o.component) > 1).sum())))

    print(f"\n{'run':32s} {'rows':>8s} {'seconds':>8s} {'rows/s':>9s} {'cand':>7s} {'clusters':>8s}")
    for name, n, secs, cand, cl in rows_out:
        print(f"{name:32s} {n:>8d} {secs:8.2f} {n / secs:9.0f} {cand:>7d} {cl:>8d}")
    base_rate = len(sub) / secs_a
    r1, r2 = args.rows / ours[1][0], args.rows / ours[2][0]
    print(f"\nbaseline A ran on {len(sub)} rows ({base_rate:.0f} rows/s; extrapolated to {args.rows} rows: "
          f"{args.rows / base_rate:.0f}s); identical clusters and candidate pairs to ours' word-MinHash "
          f"stage: yes; rows marked duplicate: baseline A {n_dups(comp_a)}, ours' word stage {n_dups(comp_w)}, "
          f"ours in all {n_dups(res_o.component)}")
    print(f"speedup vs baseline A, same {len(sub)} rows, 1 proc: {secs_a / secs_o:.1f}x")
    print(f"speedup vs baseline A, ours at {args.rows} rows: 1 proc {r1 / base_rate:.1f}x, "
          f"2 procs {r2 / base_rate:.1f}x")
    print(f"num_proc 2 vs 1: {r2 / r1:.2f}x (control: 2 processes of plain Python work run "
          f"{machine_parallelism():.2f}x faster than 1 on this machine right now)")
    rate_o = n_peer / secs_op
    best = max(peers, key=lambda k: n_peer / peers[k][0])
    rate_b = n_peer / peers[best][0]
    print(f"\npeers ran on {n_peer} rows{' (all)' if n_peer == args.rows else f' of {args.rows} (--peer-rows)'}, "
          f"end to end, fed the reference Python shingles; ours on the same rows, num_proc 1, edits "
          f"{'ON' if p.edits.enabled else 'off'}; best of {args.repeats} runs each. The reference Python "
          f"normalize + shingles alone, which both peers include: {n_peer / secs_sh:.0f} rows/s")
    print(f"{'':32s} {'rows/s':>9s} {'dup rows':>9s}")
    print(f"{'ours (defaults: all passes)':32s} {rate_o:9.0f} {n_dups(res_op.component):>9d}")
    print(f"{'  of which word-MinHash stage':32s} {'':>9s} {n_dups(word_stage(res_op, p.threshold)[0]):>9d}"
          "   (its pairs alone, before edits and slot check)")
    for name, (secs, comp, _) in peers.items():
        print(f"{name:32s} {n_peer / secs:9.0f} {n_dups(comp):>9d}")
    print(f"ours / best peer ({best}): {rate_o / rate_b:.2f}x; target >= 3x with edits on: "
          f"{'PASS' if rate_o >= 3 * rate_b and p.edits.enabled else 'FAIL'}")
    print(f"peak RSS of this process (data, baseline and all runs): {peak_rss_mb():.0f} MB")
    print(f"targets: >= 5x vs baseline A: {'PASS' if r2 / base_rate >= 5 else 'FAIL'}; "
          f">= 50k rows/s on 2 procs: {'PASS' if r2 >= 50_000 else 'FAIL'} ({r2:.0f})")

    if args.memory_scan:
        print(f"\nmemory scan (fresh process each, num_proc 1):\n{'rows':>9s} {'gen s':>7s} {'dedup s':>8s} "
              f"{'rows/s':>8s} {'RSS before MB':>14s} {'peak MB':>8s} {'growth MB':>10s} {'clusters':>9s}")
        for n in [int(x) for x in args.scan_rows.split(",")]:
            out = subprocess.run([sys.executable, __file__, "--child", str(n), "--seed", str(args.seed)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{n:>9d} {r['gen_s']:7.1f} {r['secs']:8.2f} {n / r['secs']:8.0f} {r['rss_before_mb']:14.0f} "
                  f"{r['peak_mb']:8.0f} {r['peak_mb'] - r['rss_before_mb']:10.0f} {r['clusters']:>9d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
