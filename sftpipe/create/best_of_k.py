"""Best-of-K / rejection sampling: keep the best of a prompt's K candidate replies, or reject the
prompt when no candidate is good enough.

Each candidate gets a verdict from the rule verifiers (:mod:`.verify`) and, optionally, a score
(a reward model's, a judge's, the reference LM's log-probability: higher is better). Per prompt:

* candidates a rule marks wrong (``ok = False``) are out;
* among the rest, verified ones (``ok = True``) come first, then the highest score, then the lowest
  candidate index (so without scores the first verified candidate wins, deterministically);
* a prompt is rejected when none is left (ledger reason ``no_passing_candidate``), when the best one
  is unverifiable and ``unverifiable`` is ``drop`` (reason ``unverifiable``), or when its score is below
  ``min_score`` (``below_min_score``); a prompt whose request failed is rejected as ``generation_failed``.

The kept row is the prompt with the winning reply (``meta.best_of_k``: k, how many candidates
passed, which one won, its verdict and score). Every input prompt is either kept or in the ledger,
with its evidence (the verdicts of its candidates and the expected answer).
"""

from __future__ import annotations

from collections import Counter

from ..ledger import FilterResult, drop
from .backends import prompt_messages
from .verify import Verdict, verify


def best_of_k(records: list[dict], results: list[dict], scores: list[list[float | None]] | None = None,
              unverifiable: str = "keep", min_score: float | None = None,
              verdicts: list[list[Verdict]] | None = None) -> FilterResult:
    """``results[i]`` is the backend's result for ``records[i]`` (``{"replies": [...] | None, "error"}``);
    ``scores[i][j]`` an optional score of candidate j (None: no score); ``verdicts[i][j]`` the reward
    stage's verdict on candidate j (default: the rule verifiers' on the reply)."""
    if unverifiable not in ("keep", "drop"):
        raise ValueError(f"unverifiable must be keep or drop, not {unverifiable!r}")
    kept, dropped = [], []
    passed_at: Counter = Counter()
    for i, (rec, res) in enumerate(zip(records, results)):
        replies = res.get("replies")
        if not replies:
            dropped.append(drop(rec, "best_of_k", "generation_failed", error=res.get("error")))
            continue
        vs = verdicts[i] if verdicts is not None else [verify(rec, r) for r in replies]
        sc = (scores[i] if scores is not None else None) or [None] * len(replies)
        ranked = sorted((j for j, v in enumerate(vs) if v.ok is not False),
                        key=lambda j: (vs[j].ok is not True, -(sc[j] if sc[j] is not None else float("-inf")), j))
        n_pass = sum(v.ok is True for v in vs)
        evidence = {"k": len(replies), "passed": n_pass, "verdicts": [v.ok for v in vs],
                    "rule": vs[0].rule, "expected": vs[0].expected}
        if not ranked:
            dropped.append(drop(rec, "best_of_k", "no_passing_candidate", **evidence, first_reply=replies[0][:200]))
            continue
        best = ranked[0]
        if vs[best].ok is None and unverifiable == "drop":
            dropped.append(drop(rec, "best_of_k", "unverifiable", **evidence, first_reply=replies[0][:200]))
            continue
        if min_score is not None and sc[best] is not None and sc[best] < min_score:
            dropped.append(drop(rec, "best_of_k", "below_min_score", **evidence, score=sc[best], min_score=min_score))
            continue
        if n_pass:
            passed_at[next(j for j, v in enumerate(vs) if v.ok)] += 1
        meta = {**rec.get("meta", {}), "best_of_k": {"k": len(replies), "passed": n_pass, "chosen": best,
                                                     "ok": vs[best].ok, "score": sc[best]}}
        row = {**rec, "messages": [*prompt_messages(rec), {"role": "assistant", "content": replies[best]}], "meta": meta}
        kept.append(row)
    reasons = Counter(d["reason"] for d in dropped)
    verified = sum(r["meta"]["best_of_k"]["ok"] is True for r in kept)
    return FilterResult(kept, dropped, {"prompts": len(records), "kept": len(kept), "kept_verified": verified,
                                        "rejected": dict(sorted(reasons.items()))},
                        {"first_passing_candidate": dict(sorted(passed_at.items()))})
