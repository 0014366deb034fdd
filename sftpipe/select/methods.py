"""Choosing the training rows to a budget: the selection algorithms, over plain numpy arrays.

Nothing here knows about DVC, records or models; the select stage maps its rows to

* ``order_score``: one number per row, higher is better (the combined score ranks);
* ``X``:           L2-normalised float32 embeddings, one row per record (diverse, kcenter);
* ``groups``:      one group name per row (its label, source or language, or "" for all);

and gets back which rows are kept (:class:`Selection`), with the reason every other row was dropped.

Methods
-------
``all``      every row, in input order.
``random``   a seeded shuffle, each group filled to its quota.
``top``      best ``order_score`` first (ties by index), each group filled to its quota.
``diverse``  the DEITA-style filter (Liu et al., 2023, "What makes good data for alignment?"): walk
             the rows best score first and admit one only while its group has room and its cosine
             similarity to *every* row admitted so far stays below ``threshold``.
``kcenter``  greedy k-center on cosine distance (Gonzalez 1985): start at the best-scored row, then
             repeatedly add the row farthest from the chosen set, i.e. the one whose highest cosine
             similarity to any chosen row is the lowest (ties by lower index), among rows whose group
             has room.

Quotas (:func:`quotas`) split the budget between groups: named groups get their weight's share,
the rest is spread over the other groups in proportion to their size or evenly (``balance``).

Reasons (every input index is either in ``chosen`` or in ``reasons``, exactly once), with evidence:

* ``budget``:      the budget ran out before the row was taken. random: ``group``; top: ``score`` and
                   ``rank`` (1 = best); diverse, kcenter: ``nearest`` chosen row and ``similarity``
                   (None, None when nothing was chosen);
* ``quota``:       ``group`` and ``quota``: the group was full when the walk reached the row (top,
                   diverse; checked before the similarity), or was allotted no rows at all (random,
                   kcenter);
* ``too_similar``: diverse only; ``nearest`` is the admitted row it is closest to at the time it was
                   rejected (the exact argmax, the earliest admitted on a tie), ``similarity`` their
                   cosine (rounded to 4 places).

``nearest`` is ``ids[j]`` when ids are given, else the index ``j``.

Speed (see ``bench/select_speed.py``): ``diverse`` keeps the admitted embeddings in a preallocated
(k, d) matrix and tests the next candidates in blocks with one matrix product against them, plus one
product within the block; only the candidates that clash with an earlier row of the same block are
resolved one at a time; the evidence of the ``budget`` rows comes from one (n x k) product, in chunks.
``kcenter`` keeps each row's highest similarity to the chosen set, folding the picks in with one
matrix product per batch of picks, and finds each pick exactly from a sorted prefix of the rows (see
:func:`_kcenter`); the folds give the evidence too. Similarities are float32 dot products: a pair
within a few ulps of ``threshold``, or two rows equally far from the chosen set to ~1e-7, may go
either way depending on how BLAS sums (the same way every run on the same machine and thread count).
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

METHODS = ("all", "random", "top", "diverse", "kcenter")

# floats per chunk of the (rows x chosen) similarity product for the evidence of unchosen rows (~16 MB)
_EVIDENCE_CHUNK = 1 << 22
# kcenter: picks folded into the running similarities at once, rows kept sorted between two folds
_KCENTER_BATCH = 64
_KCENTER_PREFIX = 8192


@dataclass
class Selection:
    """The outcome of :func:`select`."""

    chosen: np.ndarray                          # int64 indices into the input, in selection order
    reasons: dict[int, dict] = field(default_factory=dict)   # every index not chosen -> {"reason": ..}
    quotas: dict[str, int] = field(default_factory=dict)     # group -> rows allotted
    details: dict = field(default_factory=dict)              # counts per stage, for the report


# --------------------------------------------------------------------------- budget and quotas

def _exact(x: float | int) -> Fraction:
    """The number as written (0.35 -> 7/20, not the binary float), so rounding halves is intuitive."""
    return Fraction(repr(float(x))) if not isinstance(x, int) else Fraction(x)


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def budget_rows(budget: float | None, n: int) -> int:
    """Rows the budget allows out of ``n``.

    ``None`` -> all ``n``; a fraction (< 1) -> ``round(budget * n)`` rounding halves up, at least 1
    when ``n > 0``; a whole number -> ``min(budget, n)``.
    """
    n = max(0, int(n))
    if budget is None:
        return n
    if isinstance(budget, float) and math.isnan(budget) or budget < 0:
        raise ValueError(f"budget {budget!r} is negative or not a number")
    if budget == 0 or n == 0:
        return 0
    if budget < 1:
        return min(n, max(1, _round_half_up(_exact(budget) * n)))
    if budget != int(budget):
        raise ValueError(f"budget {budget!r} is neither a whole number of rows nor a fraction below 1")
    return min(int(budget), n)


def _largest_remainder(total: int, prio: dict[str, Fraction]) -> dict[str, int]:
    """``total`` split in proportion to ``prio`` (all > 0): floors, then one more each to the largest
    remainders, ties by group name."""
    s = sum(prio.values())
    ideal = {g: total * p / s for g, p in prio.items()}
    out = {g: math.floor(v) for g, v in ideal.items()}
    left = total - sum(out.values())
    for g in sorted(prio, key=lambda g: (-(ideal[g] - out[g]), g))[:left]:
        out[g] += 1
    return out


def _water_fill(total: int, prio: dict[str, Fraction], cap: dict[str, int]) -> dict[str, int]:
    """``total`` split in proportion to ``prio`` with each group capped at ``cap``: a group whose
    share reaches its cap takes the cap and the rest is re-split among the others. Groups with zero
    priority or room get nothing. Returns min(total, sum of the caps) rows in all."""
    out = {g: 0 for g in prio}
    active = {g: p for g, p in prio.items() if p > 0 and cap.get(g, 0) > 0}
    while total > 0 and active:
        s = sum(active.values())
        full = [g for g, p in active.items() if total * p / s >= cap[g]]
        if not full:
            # every ideal share is below its (whole) cap, so floor + 1 still fits
            for g, v in _largest_remainder(total, active).items():
                out[g] += v
            return out
        for g in full:
            out[g] += cap[g]
            total -= cap[g]
            del active[g]
    return out


def quotas(groups: list[str], k: int, weights: dict[str, float] | None = None,
           balance: bool = False) -> dict[str, int]:
    """Rows allotted to each group, summing to exactly ``min(k, len(groups))``.

    * Every group named in ``weights`` gets ``round(weight * k)`` (the named groups together get
      ``round(sum(weights) * k)``, split by largest remainder), capped at the rows it has; a named
      group with no rows gets 0.
    * The rest of ``k`` (including what the caps left over) goes to the unnamed groups: in proportion
      to their size, or evenly with ``balance`` (water-filling: a group smaller than its share takes
      all its rows, the leftover is re-split among the others).
    * Whatever the unnamed groups cannot take (none, or all full) goes to the named groups with room,
      in proportion to their weights, then to any group with room (a weight of 0 only yields then).

    Rounding is largest remainder, ties by group name, with weights read as written (0.35 is 7/20),
    so the result depends on the inputs alone. The keys are every group present and every named one.
    """
    weights = dict(weights or {})
    bad = {g: w for g, w in weights.items() if not w >= 0}
    if bad:
        raise ValueError(f"negative weights {bad}")
    sizes = Counter(groups)
    k = max(0, min(int(k), len(groups)))
    out = {g: 0 for g in sorted(set(sizes) | set(weights))}
    if k == 0:
        return out
    w = {g: _exact(v) for g, v in weights.items()}
    wsum = sum(w.values(), Fraction(0))
    if wsum > 1 + Fraction(1, 10**9):
        raise ValueError(f"weights sum to {float(wsum):g}; they are shares of the budget (at most 1)")
    named = {g: v for g, v in w.items() if v > 0}
    if named:
        share = _largest_remainder(min(k, _round_half_up(wsum * k)), named)
        for g, v in share.items():
            out[g] = min(v, sizes.get(g, 0))
    rest = k - sum(out.values())

    def give(prio: dict[str, Fraction]) -> None:
        nonlocal rest
        room = {g: sizes.get(g, 0) - out[g] for g in prio}
        for g, v in _water_fill(rest, prio, room).items():
            out[g] += v
            rest -= v

    unnamed = [g for g in sorted(sizes) if g not in weights]
    give({g: Fraction(1 if balance else sizes[g]) for g in unnamed})
    if rest:
        give(named)
    if rest:
        give({g: Fraction(1 if balance else sizes[g]) for g in sorted(sizes)})
    assert rest == 0 and sum(out.values()) == k, (rest, out, k)
    return out


# --------------------------------------------------------------------------- selection

def select(method: str, *, k: int, order_score: np.ndarray | None = None, X: np.ndarray | None = None,
           groups: list[str] | None = None, quota: dict[str, int] | None = None, threshold: float = 0.9,
           seed: int = 0, ids: list[str] | None = None, block: int = 512, threads: int | None = 1) -> Selection:
    """Choose up to ``k`` rows with ``method`` (see the module docstring).

    ``groups`` names each row's group (``None``: one group); ``quota`` caps the rows taken per group
    (``None``: no cap but ``k``; a group missing from it gets no rows). ``ids`` name rows in the
    evidence (``nearest``); without them, indices. ``block``: candidates tested per matrix product
    (diverse), a speed knob only: the result does not depend on it. ``threads``: BLAS threads while
    selecting (``None``: leave them as they are). One by default: the walk runs thousands of small
    products, which stall at every thread barrier when another process holds a core (diverse walking
    all of 100k rows: 0.8 s on one thread, 3.1 s on two, on a busy 2-core machine), and one thread
    keeps the float sums independent of the thread count.
    """
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; expected one of {METHODS}")
    n = _n_rows(groups, order_score, X)
    if groups is None:
        groups = [""] * n
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group names for {n} rows")
    if ids is not None and len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} rows")
    k = max(0, min(int(k), n))
    names = sorted(set(groups))
    code_of = {g: i for i, g in enumerate(names)}
    codes = np.fromiter((code_of[g] for g in groups), dtype=np.int64, count=n)
    if quota is None:
        cap = np.full(len(names), n, dtype=np.int64)       # no cap but k
    else:
        cap = np.array([max(0, int(quota.get(g, 0))) for g in names], dtype=np.int64)
    score = None
    if order_score is not None:
        score = np.asarray(order_score, dtype=np.float64).reshape(-1)
        if len(score) != n:
            raise ValueError(f"{len(score)} scores for {n} rows")
    if method in ("diverse", "kcenter"):
        if X is None:
            raise ValueError(f"method {method!r} needs embeddings (X)")
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or len(X) != n:
            raise ValueError(f"embeddings of shape {X.shape} for {n} rows")
    if not 0 < threshold <= 1 and method == "diverse":
        raise ValueError(f"threshold {threshold} is not in (0, 1]")

    ctx = _Ctx(n=n, k=k, names=names, codes=codes, cap=cap, score=score, ids=ids)
    if threads is None or method in ("all", "random", "top"):
        limit = contextlib.nullcontext()
    else:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(int(threads))
    with limit:
        chosen, reasons, details = _run(method, ctx, X, float(threshold), int(block), seed)
    chosen = np.asarray(chosen, dtype=np.int64)
    details = {"method": method, "rows": n, "k": k, "chosen": len(chosen), "short": k - len(chosen)
               if method != "all" else 0, **details,
               "reasons": dict(sorted(Counter(r["reason"] for r in reasons.values()).items()))}
    return Selection(chosen=chosen, reasons=reasons, quotas=dict(quota) if quota is not None else {},
                     details=details)


def _run(method: str, ctx: _Ctx, X, threshold: float, block: int, seed: int):
    if method == "all":
        return np.arange(ctx.n, dtype=np.int64), {}, {}
    if method == "random":
        return _random(ctx, seed)
    if method == "top":
        return _top(ctx)
    if method == "diverse":
        return _diverse(ctx, X, threshold, max(1, block))
    return _kcenter(ctx, X)


@dataclass
class _Ctx:
    n: int
    k: int
    names: list[str]
    codes: np.ndarray       # (n,) group code per row
    cap: np.ndarray         # (groups,) rows allowed per group code
    score: np.ndarray | None
    ids: list[str] | None

    def name(self, j: int):
        return self.ids[j] if self.ids is not None else int(j)

    def order(self) -> np.ndarray:
        """Walk order: score descending, ties (and NaN scores, last) by index; index order without scores."""
        if self.score is None:
            return np.arange(self.n, dtype=np.int64)
        return np.argsort(-self.score, kind="stable").astype(np.int64)

    def score_of(self, i: int):
        if self.score is None:
            return None
        s = float(self.score[i])
        return None if math.isnan(s) else s


def _n_rows(groups, order_score, X) -> int:
    for a in (groups, order_score, X):
        if a is not None:
            return len(a)
    raise ValueError("select needs groups, order_score or X to know the rows")


def _rank_within(codes: np.ndarray) -> np.ndarray:
    """Position of each element among the earlier elements of its own code (0 for the first)."""
    if len(codes) == 0:
        return np.zeros(0, dtype=np.int64)
    o = np.argsort(codes, kind="stable")
    c = codes[o]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(c)]))
    rank = np.empty(len(codes), dtype=np.int64)
    rank[o] = np.arange(len(codes)) - run_start
    return rank


def _fill(ctx: _Ctx, order: np.ndarray):
    """Walk ``order`` taking each row while its group has room and fewer than k are taken.
    Returns (taken mask over the walk, walk positions reached: up to the k-th row taken, or all)."""
    oc = ctx.codes[order]
    fits = _rank_within(oc) < ctx.cap[oc]
    run = np.cumsum(fits)
    taken = fits & (run <= ctx.k)
    if ctx.k == 0:
        return taken, 0
    if len(run) and run[-1] >= ctx.k:
        return taken, int(np.searchsorted(run, ctx.k)) + 1      # just past the k-th row taken
    return taken, len(order)


def random_walk(n: int, seed: int) -> np.ndarray:
    """The seeded order in which ``random`` takes rows (also select's walk when no score is given)."""
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def _random(ctx: _Ctx, seed: int):
    perm = random_walk(ctx.n, seed)
    taken, _ = _fill(ctx, perm)
    reasons = {}
    for i in perm[~taken].tolist():
        g = int(ctx.codes[i])
        if ctx.cap[g] == 0:
            reasons[i] = {"reason": "quota", "group": ctx.names[g], "quota": 0}
        else:
            reasons[i] = {"reason": "budget", "group": ctx.names[g]}
    return perm[taken], reasons, {"seed": seed}


def _top(ctx: _Ctx):
    order = ctx.order()
    taken, stop = _fill(ctx, order)
    reasons = {}
    for p in np.flatnonzero(~taken).tolist():
        i = int(order[p])
        if p >= stop:
            reasons[i] = {"reason": "budget", "score": ctx.score_of(i), "rank": p + 1}
        else:
            g = int(ctx.codes[i])
            reasons[i] = {"reason": "quota", "group": ctx.names[g], "quota": int(ctx.cap[g])}
    return order[taken], reasons, {"walked": stop}


def _nearest(X: np.ndarray, rows: np.ndarray, C: np.ndarray):
    """For each of ``rows``: the index (into C) of its most similar row of C, the earliest on a tie,
    and that similarity. One (rows x len(C)) product, in chunks."""
    arg = np.zeros(len(rows), dtype=np.int64)
    best = np.full(len(rows), -np.inf, dtype=np.float32)
    if len(C) == 0 or len(rows) == 0:
        return arg, best
    step = max(64, _EVIDENCE_CHUNK // len(C))
    for s in range(0, len(rows), step):
        S = X[rows[s:s + step]] @ C.T
        a = S.argmax(axis=1)
        arg[s:s + step] = a
        best[s:s + step] = S[np.arange(len(a)), a]
    return arg, best


def _budget_reasons(ctx: _Ctx, rows: list[int], chosen: list[int], arg: np.ndarray, best: np.ndarray,
                    reasons: dict) -> None:
    """``budget`` for ``rows``, with their nearest chosen row ``chosen[arg]`` and its similarity."""
    if not chosen:
        for i in rows:
            reasons[i] = {"reason": "budget", "nearest": None, "similarity": None}
        return
    names = [ctx.name(j) for j in chosen]
    for i, j, s in zip(rows, arg.tolist(), best.tolist()):
        reasons[i] = {"reason": "budget", "nearest": names[j], "similarity": round(s, 4)}


def _diverse(ctx: _Ctx, X: np.ndarray, threshold: float, block: int):
    n, k = ctx.n, ctx.k
    d = X.shape[1]
    order = ctx.order()
    A = np.empty((max(k, 1), d), dtype=np.float32)     # the admitted embeddings, in admission order
    admitted: list[int] = []
    used = [0] * len(ctx.cap)
    capl = ctx.cap.tolist()
    reasons: dict[int, dict] = {}
    m = pos = blocks = compared = resolved = 0
    n_sim = n_quota = 0
    while pos < n and m < k:
        # near the end, a smaller block: fewer products of rows the walk will never reach
        blk = order[pos:pos + min(block, max(64, 2 * (k - m)))]
        B = len(blk)
        blocks += 1
        bcodes = ctx.codes[blk]
        open_ = np.asarray(used)[bcodes] < ctx.cap[bcodes]   # a group full now stays full for the block
        cpos = np.flatnonzero(open_)                   # block positions of the candidates
        nc = len(cpos)
        m0 = m
        cand_of = np.full(B, -1, dtype=np.int64)
        cand_of[cpos] = np.arange(nc)
        if nc:
            compared += nc
            Xc = X[blk[cpos]]
            if m0:
                S = Xc @ A[:m0].T                        # against everything admitted before the block
                pre_arg = S.argmax(axis=1)
                pre_max = S[np.arange(nc), pre_arg]
                del S
            else:
                pre_arg = np.zeros(nc, dtype=np.int64)
                pre_max = np.full(nc, -np.inf, dtype=np.float32)
            pre_rej = pre_max >= threshold
            sidx = np.flatnonzero(~pre_rej)            # the survivors: may still clash within the block
            surv_of = np.full(nc, -1, dtype=np.int64)
            surv_of[sidx] = np.arange(len(sidx))
            G = Xc @ Xc[sidx].T                        # (candidates, survivors) within the block
            clash = G >= threshold
            earlier = cpos[sidx][None, :] < cpos[:, None]
            may_clash = (clash & earlier).any(axis=1).tolist()
            pre_rej_l = pre_rej.tolist()
            surv_l = surv_of.tolist()
        adm_cols: list[int] = []                       # survivor columns of the rows admitted in the block
        adm_pos: list[int] = []
        rejected: list[int] = []                       # candidate numbers rejected as too similar
        blk_l, codes_l, cand_l = blk.tolist(), bcodes.tolist(), cand_of.tolist()
        stop = B
        for p in range(B):
            if m == k:
                stop = p
                break
            i, g, c = blk_l[p], codes_l[p], cand_l[p]
            if c < 0 or used[g] >= capl[g]:
                reasons[i] = {"reason": "quota", "group": ctx.names[g], "quota": capl[g]}
                n_quota += 1
            elif pre_rej_l[c]:
                rejected.append(c)
            elif may_clash[c] and _clashes(clash[c], adm_cols):
                resolved += 1
                rejected.append(c)
            else:
                resolved += may_clash[c]
                A[m] = X[i]
                m += 1
                used[g] += 1
                admitted.append(i)
                adm_cols.append(surv_l[c])
                adm_pos.append(p)
        pos += stop
        if rejected:
            n_sim += len(rejected)
            r = np.asarray(rejected, dtype=np.int64)
            best, best_ord = pre_max[r], pre_arg[r]
            if adm_cols:                               # rows admitted earlier in the same block
                Gi = G[np.ix_(r, adm_cols)]
                Gi[np.asarray(adm_pos)[None, :] > cpos[r][:, None]] = -np.inf
                ia = Gi.argmax(axis=1)
                im = Gi[np.arange(len(r)), ia]
                inner = im > best                      # on a tie the earlier admitted row wins
                best = np.where(inner, im, best)
                best_ord = np.where(inner, m0 + ia, best_ord)
            for c, o, s in zip(r.tolist(), best_ord.tolist(), best.tolist()):
                reasons[blk_l[cpos[c]]] = {"reason": "too_similar", "nearest": ctx.name(admitted[o]),
                                           "similarity": round(s, 4)}
    rest = order[pos:]
    arg, best = _nearest(X, rest, A[:m])
    _budget_reasons(ctx, rest.tolist(), admitted, arg, best, reasons)
    details = {"threshold": threshold, "walked": pos, "compared": compared, "blocks": blocks,
               "resolved_in_block": resolved, "too_similar": n_sim, "quota_full": n_quota,
               "not_reached": len(rest), "ran_out": m < k}
    return admitted, reasons, details


def _clashes(row: np.ndarray, cols: list[int]) -> bool:
    return bool(cols) and bool(row[cols].any())


def _kcenter(ctx: _Ctx, X: np.ndarray):
    """Greedy k-center. ``best`` holds each row's highest similarity to a chosen row (``near``: which,
    the earliest on a tie) and ``key`` the same with +inf where a row cannot be picked (chosen, or
    its group full); the next pick is the argmin of ``key``, the lowest index on a tie.

    The plain way updates ``key`` with one matrix-vector product per pick, a pass over all of X
    (memory-bound). Here the picks are folded into ``best`` in batches of ``_KCENTER_BATCH`` with one
    matrix product (compute-bound), and in between ``key`` is stale: a lower bound of the true value,
    since it only grows. The rows are kept sorted by their stale key, and a pick computes the true key
    of the first t of them (the max with their similarity to the pending picks): when the lowest true
    key found is below the stale key of row t+1, no later row can beat it, so the pick is exact, ties
    included. Otherwise t grows; past the sorted prefix (``_KCENTER_PREFIX`` rows) the pending picks
    are folded and the pick is the plain argmin. The folds also give the evidence of the rows left
    out (their nearest chosen row) at no extra cost.
    """
    n, k = ctx.n, ctx.k
    d = X.shape[1]
    used = [0] * len(ctx.cap)
    capl = ctx.cap.tolist()
    members: dict[int, np.ndarray] | None = None
    chosen: list[int] = []
    stats = {"folds": 0, "rows_checked": 0, "fallbacks": 0}
    room = ctx.cap[ctx.codes] > 0 if n else np.zeros(0, dtype=bool)
    best = near = None
    if k and room.any():
        order = ctx.order()
        start = int(order[np.flatnonzero(room[order])[0]])
        best = np.empty(n, dtype=np.float32)
        np.dot(X, X[start], out=best)
        near = np.zeros(n, dtype=np.int64)
        blocked = ~room
        key = best.copy()
        key[blocked] = np.inf
        batch = max(1, _KCENTER_BATCH)
        P = np.empty((batch, d), dtype=np.float32)     # the pending picks' embeddings
        npend = 0
        srt = sk = None
        bound_out = np.inf
        L = min(n, max(1, _KCENTER_PREFIX))
        XS = np.empty((L, d), dtype=np.float32)        # embeddings of the sorted prefix, gathered lazily
        ex = np.empty(L, dtype=np.float32)             # their true key, for the first `upto` of them
        upto = 0

        def fold(resort: bool = True):
            nonlocal npend, srt, sk, bound_out, upto
            if npend:
                base = len(chosen) - npend             # chosen[base:] are pending
                step = 8192                            # rows x batch similarities stay in cache
                for s in range(0, n, step):
                    sims = X[s:s + step] @ P[:npend].T
                    a = sims.argmax(axis=1)
                    m = sims[np.arange(len(a)), a]
                    up = np.flatnonzero(m > best[s:s + step])  # on a tie the earlier pick stays
                    best[s + up] = m[up]
                    near[s + up] = base + a[up]
                npend = 0
                stats["folds"] += 1
                np.copyto(key, best)
                key[blocked] = np.inf
            if not resort:
                return
            if L < n:
                part = np.argpartition(key, L)
                idx, bound_out = part[:L], float(key[part[L]])
            else:
                idx, bound_out = np.arange(n), np.inf
            srt = idx[np.lexsort((idx, key[idx]))]
            sk = key[srt]
            upto = 0

        def pending_added():
            """The newest pending pick raises the true keys computed so far."""
            if upto:
                np.maximum(ex[:upto], XS[:upto] @ P[npend - 1], out=ex[:upto])

        def pick() -> int | None:
            nonlocal upto
            t = min(L, 2 * npend + 32)
            while True:
                if t > upto:                           # true keys of srt[upto:t]
                    XS[upto:t] = X[srt[upto:t]]
                    ex[upto:t] = sk[upto:t]
                    if npend:
                        np.maximum(ex[upto:t], (XS[upto:t] @ P[:npend].T).max(axis=1), out=ex[upto:t])
                    stats["rows_checked"] += t - upto
                    upto = t
                open_ = ~blocked[srt[:t]]              # chosen, or group full, since the sort
                bound = sk[t] if t < L else bound_out
                if open_.any():
                    e = np.where(open_, ex[:t], np.inf)
                    low = e.min()
                    if low < bound:
                        return int(srt[:t][e == low].min())
                if t < L:
                    t = min(L, 4 * t)
                    continue
                stats["fallbacks"] += 1
                fold()
                j = int(np.argmin(key))
                return None if key[j] == np.inf else j

        j = start
        while True:
            chosen.append(j)
            blocked[j] = True
            key[j] = np.inf
            if j != start:
                P[npend] = X[j]
                npend += 1
                pending_added()
            g = int(ctx.codes[j])
            used[g] += 1
            if used[g] >= capl[g]:
                if members is None:
                    o = np.argsort(ctx.codes, kind="stable")
                    members = {int(ctx.codes[a[0]]): a
                               for a in np.split(o, np.flatnonzero(np.diff(ctx.codes[o])) + 1)}
                blocked[members[g]] = True
                key[members[g]] = np.inf
            if len(chosen) == k:
                break
            if srt is None or npend == batch:
                fold()
            nxt = pick()
            if nxt is None:
                break
            j = nxt
        fold(resort=False)
    chosen_a = np.asarray(chosen, dtype=np.int64)
    reasons: dict[int, dict] = {}
    mask = np.ones(n, dtype=bool)
    mask[chosen_a] = False
    zero = ctx.cap[ctx.codes] == 0
    for i in np.flatnonzero(mask & zero).tolist():
        reasons[i] = {"reason": "quota", "group": ctx.names[int(ctx.codes[i])], "quota": 0}
    rest = np.flatnonzero(mask & ~zero)
    radius = None            # how far the row farthest from the chosen set is from it (1 - cosine)
    if chosen and len(rest):
        _budget_reasons(ctx, rest.tolist(), chosen, near[rest], best[rest], reasons)
        radius = round(1.0 - float(best[rest].min()), 4)
    else:
        _budget_reasons(ctx, rest.tolist(), chosen, np.zeros(0, np.int64), np.zeros(0, np.float32), reasons)
    return chosen_a, reasons, {"start": ctx.name(chosen[0]) if chosen else None,
                               "radius": radius, **stats}
