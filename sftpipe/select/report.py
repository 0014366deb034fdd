"""What selection did to the data's make-up: distributions and embedding coverage, before and after.

* distributions of category (label), language, source, reply length (buckets) and turns, as rows
  ``(dimension, value, before, after)`` for a DVC plot and the data card;
* coverage: for every row of the pool, the cosine similarity to its nearest chosen row; the mean,
  and the share of pool rows with a chosen row at cosine >= 0.8 ("covered"). A diverse choice of
  k rows covers more of the pool than k random rows from its densest corner;
* spread: the mean pairwise cosine among the chosen rows (lower is more varied), on up to 2,000
  rows drawn with the seed;
* a PNG with the category bars, the reply-length and IFD histograms and a 2-D projection (the
  first two principal components of the embeddings) of pool vs chosen.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..schema import last_turn_split

LENGTH_EDGES = (0, 20, 50, 100, 200, 400, 800, 1600)
COVERED_AT = 0.8


def _length_bucket(n: int) -> str:
    for lo, hi in zip(LENGTH_EDGES, LENGTH_EDGES[1:]):
        if n < hi:
            return f"{lo}-{hi - 1}"
    return f">={LENGTH_EDGES[-1]}"


def dimensions(rec: dict) -> dict[str, str]:
    _, reply = last_turn_split(rec)
    return {"category": str(rec.get("label")), "lang": str(rec["meta"].get("lang")), "source": rec["source"],
            "length": _length_bucket(len(reply)),
            "turns": str(sum(m["role"] == "user" for m in rec["messages"]))}


def distributions(before: list[dict], after: list[dict]) -> list[list]:
    """Rows (dimension, value, before, after), values sorted within each dimension."""
    b = [dimensions(r) for r in before]
    a = [dimensions(r) for r in after]
    out = []
    for dim in ("category", "lang", "source", "length", "turns"):
        cb, ca = Counter(d[dim] for d in b), Counter(d[dim] for d in a)
        keys = sorted(cb | ca, key=lambda v: (LENGTH_EDGES.index(int(v.split("-")[0].lstrip(">=")))
                                              if dim == "length" else 0, v))
        out += [[dim, v, cb[v], ca[v]] for v in keys]
    return out


def nearest_similarity(X: np.ndarray, chosen: np.ndarray, block: int = 4096) -> np.ndarray:
    """For every row of X, the largest cosine to a chosen row (rows L2-normalized); -1 with none."""
    if not len(chosen):
        return np.full(len(X), -1.0, dtype=np.float32)
    C = X[chosen]
    out = np.empty(len(X), dtype=np.float32)
    for s in range(0, len(X), block):
        out[s:s + block] = (X[s:s + block] @ C.T).max(axis=1)
    return out


def spread(X: np.ndarray, idx: np.ndarray, seed: int, cap: int = 2000) -> float | None:
    """Mean pairwise cosine among rows ``idx`` (a seeded sample of ``cap`` when larger)."""
    if len(idx) < 2:
        return None
    if len(idx) > cap:
        idx = np.random.default_rng(seed).choice(idx, cap, replace=False)
    S = X[idx] @ X[idx].T
    n = len(idx)
    return float((S.sum() - np.trace(S)) / (n * (n - 1)))


def coverage(X: np.ndarray, chosen: np.ndarray, seed: int) -> dict:
    near = nearest_similarity(X, chosen)
    return {"mean_nearest_similarity": round(float(near.mean()), 4) if len(near) else None,
            f"covered_at_{COVERED_AT}": round(float((near >= COVERED_AT).mean()), 4) if len(near) else None,
            "spread_pool": _r(spread(X, np.arange(len(X)), seed)),
            "spread_selected": _r(spread(X, np.asarray(chosen), seed))}


def _r(x):
    return None if x is None else round(x, 4)


def select_png(dist: list[list], scores_pool: dict[str, list], scores_chosen: dict[str, list],
               X: np.ndarray | None, chosen: np.ndarray, path) -> Path:
    """Four panels: categories before/after, reply length, IFD, embeddings projected to 2-D."""
    from ..plots import KEPT, TOTAL, _no_data, _png

    with _png(path, (12.0, 8.0)) as fig:
        fig.suptitle("Select: pool (gray) vs selected (blue)")
        ax = fig.add_subplot(2, 2, 1)
        cats = [(v, b, a) for d, v, b, a in dist if d == "category"]
        y = np.arange(len(cats))
        ax.barh(y, [b for _, b, _ in cats], color=TOTAL, label="pool")
        ax.barh(y, [a for _, _, a in cats], color=KEPT, label="selected", height=0.5)
        ax.set_yticks(y, [v for v, _, _ in cats], fontsize="small")
        ax.set_title("rows per category")
        ax.legend(fontsize="small")
        for n, key, log in ((2, "length", True), (3, "ifd", False)):
            ax = fig.add_subplot(2, 2, n)
            pool = np.array([v for v in scores_pool.get(key, []) if v is not None], dtype=float)
            sel = np.array([v for v in scores_chosen.get(key, []) if v is not None], dtype=float)
            if log:
                pool, sel = np.log10(pool + 1), np.log10(sel + 1)
            ax.set_title(("log10(1 + reply characters)" if log else key) + " distribution")
            if not len(pool):
                _no_data(ax, f"no {key} scores")
                continue
            edges = np.linspace(pool.min(), pool.max() + 1e-9, 31)
            ax.hist(pool, bins=edges, color=TOTAL, label="pool")
            ax.hist(sel, bins=edges, color=KEPT, label="selected")
            ax.legend(fontsize="small")
        ax = fig.add_subplot(2, 2, 4)
        ax.set_title("embeddings, first two principal components")
        if X is None or len(X) < 3:
            _no_data(ax, "no embeddings (method all)")
        else:
            Xc = X - X.mean(axis=0)
            _, _, vt = np.linalg.svd(Xc[:: max(1, len(Xc) // 4000)], full_matrices=False)
            P = Xc @ vt[:2].T
            ax.scatter(P[:, 0], P[:, 1], s=3, color=TOTAL, label="pool", rasterized=True)
            ax.scatter(P[chosen, 0], P[chosen, 1], s=4, color=KEPT, label="selected", rasterized=True)
            ax.legend(fontsize="small", markerscale=3)
    return Path(path)
