"""Reward functions for generated candidates, chosen by params (``reward``):

* verdicts (correct / wrong / unverifiable): the rule verifiers of :mod:`.verify` (the sample's tasks
  have checkable answers), length bounds, JSON validity. A failed bound or an invalid JSON reply is wrong
  whatever the task rule says; otherwise the task rule decides;
* scores (higher is better): the reference LM's mean log-probability of the reply given the prompt
  (the perplexity stage's scoring path), any ``AutoModelForSequenceClassification`` reward model, an LLM
  judge through an OpenAI-compatible endpoint (normalized to [0, 1]; an unparsable judgement is kept as
  an error with its raw text, the score missing).

``score`` is the weighted sum of the scores a candidate has (``reward.weights``); None when it has none.
"""

from __future__ import annotations

import json
import logging

from ..config import ModelParams, PerplexityParams, RewardParams
from ..schema import last_turn_split
from .verify import Verdict, verify

log = logging.getLogger(__name__)


def verdict(rec: dict, rp: RewardParams) -> Verdict:
    """The verdict on a candidate row (its prompt turns plus the candidate as the last reply)."""
    _, reply = last_turn_split(rec)
    if not rp.min_chars <= len(reply.strip()) <= rp.max_chars:
        return Verdict(False, "length", f"{rp.min_chars}..{rp.max_chars} characters")
    if rp.json_valid:
        try:
            json.loads(reply)
        except ValueError:
            return Verdict(False, "json", "valid JSON")
    if rp.rules:
        return verify(rec, reply)
    return Verdict(None, "no rule asked")


def logprob_rows(rows: list[dict], model_params: ModelParams, ppl_params: PerplexityParams, path: str | None = None,
                 progress=None) -> list[float | None]:
    """Mean log-probability per token of each row's last reply given the conversation before it."""
    from ..model.loading import load_model, load_tokenizer
    from ..perplexity import reply_nll

    mp = model_params.model_copy(update={"name_or_path": path}) if path else model_params
    model, tok = load_model(mp).eval(), load_tokenizer(mp)
    return [None if x is None else -x for x in reply_nll(model, tok, rows, ppl_params, progress)]


def combined(scores: dict[str, float | None], weights: dict[str, float]) -> float | None:
    present = [(k, v) for k, v in scores.items() if v is not None]
    if not present:
        return None
    return sum(weights.get(k, 1.0) * v for k, v in present)


def reward_candidates(rows: list[dict], rp: RewardParams, model_params: ModelParams, ppl_params: PerplexityParams,
                      progress=None) -> list[dict]:
    """One result per candidate row, in order: ``{"id", "candidate_of", "ok", "rule", "expected",
    "scores": {name: value}, "score", "judge_error"?}``."""
    scores: dict[str, list] = {}
    if rp.logprob:
        scores["logprob"] = [None if v is None else round(v, 5) for v in
                             logprob_rows(rows, model_params, ppl_params, rp.logprob_model, progress)]
    if rp.reward_model.model:
        from ..select.reward import reward_rows

        scores["reward_model"] = [None if v is None else round(float(v), 5) for v in reward_rows(rows, rp.reward_model)]
    judged = None
    if rp.judge.enabled:
        from ..select.judge import judge_rows

        judged = judge_rows(rows, rp.judge)
        scores["judge"] = [j["score"] for j in judged]
    out = []
    for i, rec in enumerate(rows):
        v = verdict(rec, rp)
        s = {k: vals[i] for k, vals in scores.items()}
        res = {"id": rec["id"], "candidate_of": rec["meta"].get("candidate_of", rec["id"]), **v.evidence(),
               "scores": s, "score": combined(s, rp.weights)}
        if judged is not None and judged[i]["error"]:
            res["judge_error"] = {"error": judged[i]["error"], "raw": (judged[i]["raw"] or "")[:500]}
        out.append(res)
    return out
