"""LLM-as-judge scores through any OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp, a hosted API).

Each row becomes one chat request: the rubric with ``{prompt}`` and ``{response}`` filled in (one
pass of substitution, so braces, or a placeholder's name, inside the row's text stay as they are).
The reply's "Score: N" (or "N/max", or else its first number on the scale) is the raw score,
normalized to [0, 1] over ``min_score..max_score`` and clipped.

Transport, retries, concurrency, the on-disk cache and key handling are
:mod:`sftpipe.llm.openai_chat`'s (shared with the generation backends). Here: a row whose request
failed after its retries gets ``error`` and no score; a reply that holds no score is kept with its
raw text (``unparsable``); rows whose request is identical are asked once; results come back in
input order whatever the timing. Scores are parsed from the cached text on every run, so changing
the scale needs no requests.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

from ..config import JudgeParams
from ..errors import UserError
from ..llm.openai_chat import Endpoint, _norm_url, run_rows
from ..schema import last_turn_split, prompt_text

log = logging.getLogger(__name__)

_NUM = r"([-+]?\d+(?:\.\d+)?)"
_SCORE = re.compile(r"(?:score|rating|评分|分数|得分)\s*\**\s*(?:[:：=]|is)\s*\**\s*" + _NUM, re.I)
_FRACTION = re.compile(_NUM + r"\s*/\s*" + _NUM)
_ANY_NUM = re.compile(_NUM)
_PLACEHOLDER = re.compile(r"\{(prompt|response)\}")


# --------------------------------------------------------------------------------------------------
# request building, cache keys, parsing
# --------------------------------------------------------------------------------------------------

def fill_rubric(rubric: str, prompt: str, response: str) -> str:
    """The rubric with ``{prompt}`` and ``{response}`` replaced in one pass (not ``str.format``:
    the row's own braces, or a ``{response}`` written inside the prompt, are left alone)."""
    values = {"prompt": prompt, "response": response}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], rubric)


def build_request(rec: dict, params: JudgeParams) -> dict:
    """The chat request for one row: what is sent (besides the key) and what the cache key hashes."""
    history, reply = last_turn_split(rec)
    content = fill_rubric(params.rubric, prompt_text({"messages": history}), reply)
    return {"base_url": _norm_url(params.base_url), "model": params.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": params.temperature, "max_tokens": params.max_tokens}


def parse_score(text: str, min_score: float, max_score: float) -> float | None:
    """The raw score in a judge's reply, or None.

    "Score: N" (any case, ASCII or full-width colon, also "Rating: N" and "评分：N"; the last one
    wins, as a judge that reasons first states its verdict last), else "N/max", else the first
    number within [min_score, max_score]."""
    hits = _SCORE.findall(text)
    if hits:
        return float(hits[-1])
    for num, den in _FRACTION.findall(text):
        if math.isclose(float(den), max_score):
            return float(num)
    for num in _ANY_NUM.findall(text):
        if min_score <= float(num) <= max_score:
            return float(num)
    return None


def normalize(raw: float, min_score: float, max_score: float) -> float:
    return min(1.0, max(0.0, (raw - min_score) / (max_score - min_score)))


def _result(content: str | None, params: JudgeParams, cached: bool, error: str | None = None) -> dict:
    if content is None:
        return {"score": None, "raw_score": None, "raw": "", "error": error, "cached": False}
    raw_score = parse_score(content, params.min_score, params.max_score)
    if raw_score is None:
        error = "empty reply" if not content.strip() else "unparsable"
        return {"score": None, "raw_score": None, "raw": content, "error": error, "cached": cached}
    return {"score": normalize(raw_score, params.min_score, params.max_score), "raw_score": raw_score,
            "raw": content, "error": None, "cached": cached}


def judge_rows(records: list[dict], params: JudgeParams, cache_dir: str | Path | None = None,
               progress=None) -> list[dict]:
    """One result per record, in input order:
    ``{"score", "raw_score", "raw", "error", "cached"}`` (see the module docstring)."""
    if not params.base_url or not params.model:
        raise UserError("the judge needs judge.base_url and judge.model in params.yaml")
    out, stats = run_rows([build_request(rec, params) for rec in records], Endpoint.of("judge", params),
                          cache_dir if cache_dir is not None else params.cache_dir,
                          lambda content, cached, error: _result(content, params, cached, error), progress)
    failed = sum(1 for r in out if r["error"] not in (None, "unparsable", "empty reply"))
    log.info("judge: %d rows, %d distinct requests, %d from the cache, %d asked; %d failed, %d unparsable",
             len(records), stats.requests, stats.cached, stats.asked, failed,
             sum(1 for r in out if r["error"] in ("unparsable", "empty reply")))
    return out
