"""Choose the training rows: bounds on scores, a budget split into quotas, then one method.

Order of work, each step writing its reason into the ledger for the rows it leaves out:

1. with ``select.verify``, the rule verifiers (sftpipe/create/verify.py) on each row's last reply ->
   ``wrong_answer`` (with the rule and the expected answer); then ``select.min`` / ``select.max`` on
   raw scores -> ``below_score`` / ``above_score``;
2. the budget (rows, or a fraction of the input rows), split into quotas per group: mixture
   weights by label or source name (``select.weights``), the rest by size or, with
   ``select.balance``, evenly per category with leftovers refilled, or with ``select.stratify``, per
   category in proportion to its share of the pool (so the method ranks within each category);
3. the method inside the quotas: ``random`` (the baseline), ``top`` (by the combined score),
   ``diverse`` (score order, admitted only when below ``threshold`` cosine to every admitted row)
   or ``kcenter`` (greedy farthest-first) -> ``budget``, ``quota``, ``too_similar``. With no
   ``select.scores`` the walk order is a seeded random one (``select.seed``): ``top`` is then random
   selection and ``diverse`` random selection that skips near duplicates.

Chosen rows keep their input order in the output (training shuffles anyway) and carry their
scores in ``meta.scores`` and their place in the walk in ``meta.select_rank``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..config import SelectParams
from ..errors import UserError
from ..ledger import FilterResult, drop
from ..schema import prompt_text, response_text
from . import methods
from .scores import check_names, gather, group_of, order_score, out_of_bounds


def texts_for(records: list[dict], field: str) -> list[str]:
    if field == "prompt":
        return [prompt_text(r) for r in records]
    if field == "response":
        return [response_text(r) for r in records]
    return [prompt_text(r) + "\n" + response_text(r) for r in records]


def embed_rows(records: list[dict], params: SelectParams, max_retries: int = 3) -> np.ndarray:
    """L2-normalized embeddings of the rows (dedup's embedders: tfidf offline, or a model). With
    ``select.engine: ray`` a model embeds on ``select.ray``'s actor pool (the same floats; ``max_retries``:
    ``ray.max_retries``), in the stage's Ray session."""
    from ..dedup.semantic import embed

    e = params.embedding
    try:
        return embed(texts_for(records, e.field), e.method, e.model, params.seed, dims=e.dims,
                     batch_size=e.batch_size, engine=params.engine, actors=params.ray, max_retries=max_retries,
                     section="select.ray")
    except UserError as err:        # dedup's messages name semantic.*
        if not str(err).startswith("semantic."):
            raise
        raise UserError("select.embedding: " + str(err).split(": ", 1)[-1]) from None


def _check_weights(records: list[dict], weights: dict[str, float]) -> None:
    names = {r.get("label") for r in records} | {r["source"] for r in records}
    unknown = sorted(k for k in weights if k not in names)
    if unknown and records:
        raise UserError(f"select.weights: {unknown} name(s) no label or source of the input rows "
                        f"(labels and sources: {', '.join(sorted(str(n) for n in names if n is not None))})")


def choose(records: list[dict], params: SelectParams, extra: list[dict] | None = None,
           X: np.ndarray | None = None) -> FilterResult:
    """Kept (chosen) rows and the ledger of the rest; ``extra`` adds per-row scores (reward, judge);
    ``X`` gives precomputed embeddings (else they are computed when the method needs them)."""
    if params.method == "all" and params.budget is not None:
        raise UserError("select.budget is set but select.method is 'all' (pick random, top, diverse or kcenter)")
    _check_weights(records, params.weights)
    extra = [dict(e) for e in extra] if extra else [{} for _ in records]
    verdicts = [_verdict(r) for r in records] if params.verify else [None] * len(records)
    for e, v in zip(extra, verdicts):
        if v is not None and v.ok is not None:
            e["verified"] = 1.0 if v.ok else 0.0
    scores = [gather(r, extra[i]) for i, r in enumerate(records)]
    check_names("min", params.min, scores)      # a misspelt bound would silently bound nothing
    check_names("max", params.max, scores)
    records = [_with_notes(r, e) for r, e in zip(records, extra)]
    dropped, pool = [], []
    for i, (r, s) in enumerate(zip(records, scores)):
        bad = out_of_bounds(s, params.min, params.max)
        if verdicts[i] is not None and verdicts[i].ok is False:
            dropped.append(drop(_with_scores(r, s), "select", "wrong_answer", rule=verdicts[i].rule,
                                expected=verdicts[i].expected))
        elif bad:
            dropped.append(drop(_with_scores(r, s), "select", bad.pop("reason"), **bad))
        else:
            pool.append(i)
    k = min(methods.budget_rows(params.budget, len(records)), len(pool))
    if params.method == "all":
        chosen, reasons, quotas, details = list(range(len(pool))), {}, {}, {}
    else:
        sub = [records[i] for i in pool]
        groups = [group_of(r, params.weights, _grouping(params)) for r in sub]
        quota = methods.quotas(groups, k, params.weights, params.balance != "none")
        if params.method == "random":
            order = None
        elif params.scores:
            order = order_score([scores[i] for i in pool], params.scores)
        else:   # no score: a seeded random walk, so `diverse` is random selection that skips near duplicates
            walk = methods.random_walk(len(pool), params.seed)
            order = np.empty(len(pool))
            order[walk] = -np.arange(len(pool), dtype=np.float64)
        if params.method in ("diverse", "kcenter"):
            emb = embed_rows(sub, params) if X is None else X[pool]
        else:
            emb = None
        sel = methods.select(params.method, k=k, order_score=order, X=emb, groups=groups, quota=quota,
                             threshold=params.threshold, seed=params.seed, ids=[r["id"] for r in sub])
        chosen, reasons, quotas, details = [int(c) for c in sel.chosen], sel.reasons, sel.quotas, sel.details
        if order is not None:
            for j, ev in reasons.items():
                if params.scores:
                    ev.setdefault("order_score", round(float(order[j]), 4))
                else:   # the random walk's key is no score (its position is the evidence: rank)
                    ev.pop("score", None)
    rank = {j: n for n, j in enumerate(chosen)}
    kept = []
    for j, i in enumerate(pool):
        rec = _with_scores(records[i], scores[i])
        if j in rank:
            rec["meta"]["select_rank"] = rank[j]
            kept.append(rec)
        else:
            ev = dict(reasons[j])
            dropped.append(drop(rec, "select", ev.pop("reason"), **ev))
    extra_metrics = {"method": params.method, "budget": k, "selected": len(kept)}
    if len(kept) < k:
        extra_metrics["short_of_budget"] = k - len(kept)
    return FilterResult(kept, dropped, extra_metrics, {"quotas": quotas, **details,
                                                       "groups_selected": dict(sorted(Counter(
                                                           group_of(r, params.weights, _grouping(params))
                                                           for r in kept).items()))})


def _grouping(params: SelectParams) -> str:
    """The category quotas go by: balance's (even shares) or stratify's (shares of the pool)."""
    return params.balance if params.balance != "none" else params.stratify


def _verdict(rec: dict):
    """The rule verifiers' verdict on a row's last reply (None: the row does not end in a text reply)."""
    from ..create.verify import verify

    last = rec["messages"][-1] if rec.get("messages") else {}
    if last.get("role") != "assistant" or not isinstance(last.get("content"), str):
        return None
    return verify(rec, last["content"])


def _with_scores(rec: dict, s: dict) -> dict:
    numeric = {k: v for k, v in s.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("lang", "category")}
    return {**rec, "meta": {**rec["meta"], "scores": numeric}}


def _with_notes(rec: dict, extra: dict) -> dict:
    """``extra``'s ``_name`` entries (e.g. a judge's error and raw reply) go to ``meta.name``."""
    notes = {k[1:]: v for k, v in extra.items() if k.startswith("_")}
    return {**rec, "meta": {**rec["meta"], **notes}} if notes else rec
