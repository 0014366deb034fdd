"""LSH banding, exact and estimated Jaccard, union-find: from signatures to clusters.

:func:`candidate_pairs` finds the pairs datasketch's ``MinHashLSH`` buckets would
give (rows sharing an identical band of their signature), by sorting band keys
instead of filling hash tables; :func:`exact_jaccard` checks candidates on the
shingle-hash sets of :mod:`sftpipe.dedup.sketch`; :func:`union_find` turns the
accepted pairs into connected components.
"""

from __future__ import annotations

import numpy as np

from .sketch import sorted_unique



def _band_keys(band: np.ndarray, tail: np.ndarray | None = None) -> np.ndarray:
    """A 64-bit key per column of a (rows, n) uint32 band, with the rows of ``tail`` (uint32,
    (t, n)) after its own when given: equal slices, equal keys."""
    key = np.full(band.shape[1], 0x243F6A8885A308D3, dtype=np.uint64)
    tmp = np.empty_like(key)
    for row in (band if tail is None else [*band, *tail]):
        np.bitwise_xor(key, row, out=key)
        np.multiply(key, np.uint64(0x9FB21C651E98DF25), out=key)
        np.right_shift(key, np.uint64(29), out=tmp)
        np.bitwise_xor(key, tmp, out=key)
    return key


def _pairs_of_runs(order: np.ndarray, same_next: np.ndarray, cap: int | None = None,
                   window: int = 0) -> np.ndarray:
    """Pairs of members of runs of equal neighbours in a sorted order: all pairs of a run of at
    most ``cap`` members (every run when ``cap`` is None), and for a longer run each member with
    its ``window`` next members in the order only."""
    run_start, run_len = _runs(same_next, len(order))
    small = run_len >= 2 if cap is None else (run_len >= 2) & (run_len <= cap)
    out = []
    for L in sorted_unique(run_len[small]).tolist():
        st = run_start[small & (run_len == L)]
        members = order[st[:, None] + np.arange(L)]
        iu, ju = np.triu_indices(L, 1)
        out.append(np.stack([members[:, iu].ravel(), members[:, ju].ravel()], axis=1))
    if cap is not None and window > 0 and (run_len > cap).any():
        # the positions of the runs over the cap, and which of those runs each is in: position p
        # and p + d pair up when they are in one run
        run, pos = _run_members(run_start, run_len, np.flatnonzero(run_len > cap))
        for d in range(1, window + 1):
            p = pos[:-d][run[:-d] == run[d:]]
            out.append(np.stack([order[p], order[p + d]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


def _runs(same_next: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each run of equal neighbours over a sorted order of ``size`` positions
    (a run continues while ``same_next`` is True)."""
    start = np.concatenate([[0], np.flatnonzero(~same_next) + 1])
    return start, np.diff(np.concatenate([start, [size]]))


def _run_members(start: np.ndarray, length: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the runs ``which`` (indices into ``start``/``length``): each member's run (0, 1, ... in
    the order of ``which``) and its position, in increasing order."""
    lw = length[which]
    run = np.repeat(np.arange(len(which)), lw)
    pos = np.repeat(start[which] - (np.cumsum(lw) - lw), lw) + np.arange(len(run))
    return run, pos


def _order_big_runs(order: np.ndarray, same_next: np.ndarray, cap: int, after: tuple) -> None:
    """Reorder, in place, the members of each run of more than ``cap`` equal keys in ``order``
    (sorted by key) by the next two bands' keys, ties by column: the order
    ``np.lexsort(after + (keys,))`` gives, at the cost of sorting the big runs' members only."""
    start, length = _runs(same_next, len(order))
    big = np.flatnonzero(length > cap)
    if not len(big):
        return
    run, pos = _run_members(start, length, big)
    col = order[pos]
    order[pos] = col[np.lexsort((col,) + tuple(a[col] for a in after) + (run,))]


def candidate_pairs(sig: np.ndarray, bands: int, rows: int, valid: np.ndarray | None = None,
                    cap: int | None = None, window: int = 0, extra: np.ndarray | None = None,
                    band_range: tuple[int, int] | None = None) -> np.ndarray:
    """Pairs (i < j) of columns of ``sig`` that share at least one identical band.

    Band k is rows ``k*rows:(k+1)*rows`` of the signature, as in datasketch's
    MinHashLSH with ``params=(bands, rows)``, so the pairs are exactly those its
    buckets would give. ``valid``: column indices taking part (default all).
    Returned sorted, int64, shape (m, 2).

    ``extra`` (uint64 per column of ``sig``): part of every band's key, so only columns
    with equal ``extra`` pair up. ``cap``: a bucket (columns sharing a band) of more than
    ``cap`` members is not expanded into all its pairs, which grow as its size squared
    (rows of one prompt template meet in nearly every band); its members are ordered by
    the keys of the next bands (k+1, k+2, circularly: another order in every band, as in
    an LSH forest) and each is paired with its ``window`` next members only, so the pairs
    grow at most as columns x bands x max(cap, 2 window) / 2. Buckets of at most ``cap``
    members give all their pairs, as without ``cap``.

    ``band_range`` (first, stop): only the pairs of bands first..stop-1 (the ordering of a capped
    bucket still reads bands past ``stop``, circularly over all ``bands``), so the union over any
    partition of the bands equals the pairs of all bands at once (the Ray engine's band tasks).
    """
    n = sig.shape[1]
    idx = np.arange(n) if valid is None else np.asarray(valid, dtype=np.int64)
    cols = None if len(idx) == n and np.array_equal(idx, np.arange(n)) else idx   # None: every column
    if len(idx) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    tail = None
    if extra is not None:
        # two more rows in every band: the 64-bit extra key as two 32-bit halves
        extra = np.asarray(extra, dtype=np.uint64)[idx]
        tail = np.stack([(extra & np.uint64(0xFFFFFFFF)).astype(np.uint32), (extra >> np.uint64(32)).astype(np.uint32)])
    capped = cap is not None and len(idx) > cap
    cache: dict[int, np.ndarray] = {}

    def keys_of(k: int) -> np.ndarray:
        if k not in cache:
            cache[k] = _band_keys(_band(sig, k, rows, cols), tail)
        return cache[k]

    codes = []
    first, stop = (0, bands) if band_range is None else band_range
    for k in range(first, stop):
        band = _band(sig, k, rows, cols)
        keys = keys_of(k)
        # the order inside a run of equal keys matters only in a run over the cap (the window
        # pairs); every other run gives all its pairs, so a quicksort by key does
        order = np.argsort(keys)
        sk = keys[order]
        same = sk[1:] == sk[:-1]
        if capped:
            after = (keys_of((k + 2) % bands), keys_of((k + 1) % bands))
            _order_big_runs(order, same, cap, after)
        at = np.flatnonzero(same)
        if not all((b[:, order[at]] == b[:, order[at + 1]]).all() for b in (band, tail) if b is not None):
            # a 64-bit key collision between different slices: sort the slices themselves
            band = band if tail is None else np.concatenate([band, tail])
            order = np.lexsort((after if capped else ()) + tuple(band[::-1]))
            sb = band[:, order]
            same = (sb[:, 1:] == sb[:, :-1]).all(axis=0)
        pr = idx[_pairs_of_runs(order, same, cap if capped else None, window)]
        if len(pr):
            pr.sort(axis=1)
            codes.append(pr[:, 0] * n + pr[:, 1])
        if k >= 2:
            cache.pop(k, None)     # bands 0 and 1 are needed again by the last two
    return pairs_of_codes(codes, n)


def pairs_of_codes(codes: list[np.ndarray], n: int) -> np.ndarray:
    """The distinct pairs (i, j), sorted, int64 (m, 2), of pair codes ``i * n + j`` given in any number of
    arrays (a band's, a task's): how the band searches take the union of their bands."""
    codes = [c for c in codes if len(c)]
    if not codes:
        return np.zeros((0, 2), dtype=np.int64)
    u = sorted_unique(np.concatenate(codes))
    return np.stack([u // n, u % n], axis=1)


class LazyBands:
    """A signature matrix as :func:`candidate_pairs` reads it (``shape`` and ``sig[k*rows:(k+1)*rows]``, band k),
    each band produced on demand by ``band_of(k)`` ((rows, n) array: a band read from a spill file, say), so
    that no more than the bands in use are in memory."""

    def __init__(self, band_of, n: int, bands: int, rows: int):
        self.band_of, self.rows = band_of, rows
        self.shape = (bands * rows, n)

    def __getitem__(self, band: slice) -> np.ndarray:
        k, rest = divmod(band.start, self.rows)
        if rest or band.stop - band.start != self.rows or band.step not in (None, 1):
            raise IndexError(f"not a band of {self.rows} rows: {band}")
        return self.band_of(k)


def _band(sig: np.ndarray, k: int, rows: int, cols: np.ndarray | None) -> np.ndarray:
    """Band k of the columns ``cols`` (None: all, a view where ``sig`` is an array)."""
    band = sig[k * rows:(k + 1) * rows]
    return band if cols is None else band[:, cols]


def _gather_segments(flat: np.ndarray, offsets: np.ndarray, rows: np.ndarray):
    """Concatenated sets of ``rows`` and each element's position in ``rows``."""
    sizes = offsets[rows + 1] - offsets[rows]
    owner = np.repeat(np.arange(len(rows)), sizes)
    first = np.cumsum(sizes) - sizes
    idx = np.arange(int(sizes.sum()), dtype=np.int64) - first[owner] + offsets[rows][owner]
    return flat[idx], owner, sizes


def exact_jaccard(pairs: np.ndarray, flat: np.ndarray, offsets: np.ndarray,
                  chunk: int = 1 << 22) -> np.ndarray:
    """Exact Jaccard of the shingle sets of each pair (float64). Empty vs empty is 0."""
    out = np.zeros(len(pairs), dtype=np.float64)
    if not len(pairs):
        return out
    sizes = np.diff(offsets)
    # look the smaller set's elements up in the larger one
    i, j = pairs[:, 0], pairs[:, 1]
    small = np.where(sizes[i] <= sizes[j], i, j)
    large = np.where(sizes[i] <= sizes[j], j, i)
    cost = np.cumsum(sizes[small])
    start = 0
    while start < len(pairs):
        stop = int(np.searchsorted(cost, (cost[start - 1] if start else 0) + chunk, side="right"))
        stop = max(stop, start + 1)
        sm, lg = small[start:stop], large[start:stop]
        # sorted keys (row << 32 | hash) of every large-side row involved
        rows = sorted_unique(lg)
        vals, owner, _ = _gather_segments(flat, offsets, rows)
        keys = (rows[owner].astype(np.uint64) << np.uint64(32)) | vals.astype(np.uint64)
        qv, qowner, qsizes = _gather_segments(flat, offsets, sm)
        q = (lg[qowner].astype(np.uint64) << np.uint64(32)) | qv.astype(np.uint64)
        pos = np.minimum(np.searchsorted(keys, q), max(len(keys) - 1, 0))
        hit = keys[pos] == q if len(keys) else np.zeros(len(q), dtype=bool)
        inter = np.bincount(qowner, weights=hit, minlength=len(sm))
        union = sizes[sm] + sizes[lg] - inter
        out[start:stop] = np.divide(inter, union, out=np.zeros(len(sm)), where=union > 0)
        start = stop
    return out


def estimated_jaccard(pairs: np.ndarray, sig: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """MinHash estimate (share of equal signature values) for each pair."""
    out = np.zeros(len(pairs), dtype=np.float64)
    for s in range(0, len(pairs), chunk):
        p = pairs[s:s + chunk]
        out[s:s + chunk] = (sig[:, p[:, 0]] == sig[:, p[:, 1]]).mean(axis=0)
    return out


def union_find(n: int, edges: np.ndarray) -> np.ndarray:
    """Connected components: for each node, the smallest node index of its component.

    Vectorized union-find: every round hooks the larger root of each edge under
    the smaller one, then compresses paths by pointer jumping. Roots only ever
    point to smaller indices, so there are no cycles and the result does not
    depend on edge order.
    """
    parent = np.arange(n, dtype=np.int64)
    if not len(edges):
        return parent
    u, v = edges[:, 0].astype(np.int64), edges[:, 1].astype(np.int64)
    while True:
        while True:                                   # full path compression
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        ru, rv = parent[u], parent[v]
        diff = ru != rv
        if not diff.any():
            return parent
        hi, lo = np.maximum(ru[diff], rv[diff]), np.minimum(ru[diff], rv[diff])
        np.minimum.at(parent, hi, lo)
        keep = diff                                   # edges already inside one tree are done
        u, v = u[keep], v[keep]


def lsh_probability(s: float | np.ndarray, bands: int, rows: int):
    """Probability that a pair with Jaccard ``s`` shares at least one band."""
    return 1.0 - (1.0 - np.asarray(s, dtype=float) ** rows) ** bands
