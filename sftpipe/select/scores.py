"""Scores per row, and the one order the selection methods walk.

A row's scores are gathered into ``meta.scores``: ``ifd`` and ``ppl`` from the perplexity stage (the
reference LM), ``reward`` (a reward model) and ``judge`` (an LLM judge, normalized to [0, 1]) when
those are on, and the cheap signals ``length`` (characters of the reply), ``turns`` (user turns),
``lang`` and ``category`` (the label). Scores live on different scales and some are heavy-tailed
(perplexity), so they are combined by percentile rank, not by value: ``select.scores: {ifd: -1,
judge: 2}`` orders rows by ``-1 x rank(ifd) + 2 x rank(judge)``, each rank in [0, 1] over the rows
that have the score (a row without it sits at the middle, 0.5). Bounds (``select.min`` and
``select.max``) act on raw values.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..schema import last_turn_split

NUMERIC = ("ifd", "ppl", "reward", "judge", "length", "turns")


def cheap_signals(rec: dict) -> dict:
    """Signals that need no model: reply length in characters, user turns, language, category."""
    _, reply = last_turn_split(rec)
    return {"length": len(reply), "turns": sum(m["role"] == "user" for m in rec["messages"]),
            "lang": rec["meta"].get("lang"), "category": rec.get("label")}


def gather(rec: dict, extra: dict | None = None) -> dict:
    """Every score of one row: the reference LM's (meta.ifd, meta.ppl), any already in meta.scores,
    the cheap signals, and ``extra`` (this run's reward/judge scores)."""
    meta = rec["meta"]
    out = {k: meta[k] for k in ("ifd", "ppl") if meta.get(k) is not None}
    out.update(meta.get("scores") or {})
    out.update(cheap_signals(rec))
    out.update({k: v for k, v in (extra or {}).items() if not k.startswith("_")})
    return out


def percentile_ranks(values: list[float | None]) -> np.ndarray:
    """Rank of each value among the present ones, scaled to [0, 1] (ties share their mean rank);
    missing values get 0.5; a single present value gets 0.5."""
    x = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    out = np.full(len(x), 0.5)
    have = ~np.isnan(x)
    m = int(have.sum())
    if m > 1:
        from scipy.stats import rankdata

        out[have] = (rankdata(x[have], method="average") - 1) / (m - 1)
    return out


def check_names(key: str, names, scores: list[dict]) -> None:
    """One-line errors for ``select.<key>`` naming a score that does not exist, or one no row has."""
    unknown = sorted(k for k in names if k not in NUMERIC)
    if unknown:
        raise UserError(f"select.{key}: unknown score(s) {unknown} (one of {', '.join(NUMERIC)})")
    missing = sorted(k for k in names if k not in ("length", "turns") and not any(k in s for s in scores))
    if scores and missing:
        raise UserError(f"select.{key}: no row has a {missing[0]!r} score ("
                        + {"ifd": "set perplexity.ifd: true", "ppl": "set perplexity.enabled: true",
                           "reward": "set select.reward_model.model", "judge": "set select.judge.enabled: true"}
                        [missing[0]] + ")")


def order_score(scores: list[dict], weights: dict[str, float]) -> np.ndarray:
    """sum over ``weights`` of weight x percentile rank: higher is better."""
    check_names("scores", weights, scores)
    total = np.zeros(len(scores))
    for k, w in sorted(weights.items()):
        total += w * percentile_ranks([s.get(k) for s in scores])
    return total


def out_of_bounds(score: dict, lows: dict[str, float], highs: dict[str, float]) -> dict | None:
    """The first bound a row breaks, as ledger evidence (reason below_score/above_score), else None.
    A row without the score breaks no bound."""
    for k, lo in sorted(lows.items()):
        v = score.get(k)
        if v is not None and v < lo:
            return {"reason": "below_score", "score": k, "value": v, "bound": lo}
    for k, hi in sorted(highs.items()):
        v = score.get(k)
        if v is not None and v > hi:
            return {"reason": "above_score", "score": k, "value": v, "bound": hi}
    return None


def group_of(rec: dict, weights: dict[str, float], by: str) -> str:
    """The quota group of a row: a name in ``select.weights`` (its label, else its source), else its
    category ``by`` (label, source or lang: select.balance or select.stratify), else one shared group."""
    for name in (rec.get("label"), rec["source"]):
        if name is not None and name in weights:
            return str(name)
    if by == "none":
        return "*"
    value = {"label": rec.get("label"), "source": rec["source"], "lang": rec["meta"].get("lang")}[by]
    return f"{by}={value}"
