"""Perplexity filtering with a reference causal LM.

Scoring: each row becomes token ids plus a mask of the positions that count
(the response conditioned on the prompt, or the whole text). Rows are scored in
batches sorted by length (little padding), under ``torch.inference_mode``, in
bf16 on GPU. Empty texts get no score and are dropped as ``unscorable``; long
ones are cut from the left of the prompt so the response stays, and the
response itself is cut at ``max_length`` if it alone is too long.

Unit (``perplexity.unit``): ``byte`` divides a row's summed loss by the UTF-8 bytes of its scored text,
``token`` by its scored tokens; ``auto`` (default) is ``byte`` with a fitted reference and ``token``
with a model (:func:`scoring_unit`; a caller that passes ``auto`` to :func:`score_rows` gets tokens). Per token, a reply that tokenizes into many short pieces
(random characters, keyboard mash: one or two characters a token) pays for each piece only as much as a
fluent reply pays for a whole word, and reads as ordinary; per byte it pays for every character it
spends (the normalisation language-model evaluations use to compare tokenizers, bits per byte).

Thresholds, in perplexity space, per group (language, source, or all rows):
lower/upper quantiles, absolute min/max, and a robust z-score on log-perplexity
(median +- k * 1.4826 * MAD, the "3 sigma" recipe without the outliers pulling
the mean). Every rule set in params applies; the tightest bound wins. Every row
keeps its score in ``meta.ppl``; rows outside the bounds go to the ledger with
the score, the bounds and the rule that cut them.

The stage reads its file twice (:func:`scan_file`, :func:`filter_file`): scores first,
``perplexity.chunk_rows`` records at a time, keeping a group key and two numbers per row; then
the records again, each judged and written. :func:`perplexity_filter` does the same on a list.

Reference LM (``perplexity.reference``): ``model`` scores with ``perplexity.model`` or the model being
fine-tuned; ``fit`` trains a fresh small LM (the base model's architecture, a new tokenizer) on the
text of the rows being scored, briefly, and scores with that. The built-in base model only knows the
generated sample's kind of text, so on a user's own data its scores say little about quality; a
model fitted on the data itself learns what a typical row looks like there, so garbage stands out.
It is a separate model, used only for scoring: the base model that is fine-tuned and evaluated never
sees the rows (the test rows among them). ``auto`` picks ``fit`` exactly when the model is the
built-in base and the sources are not (only) the sample's files.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .clean.pii import PLACEHOLDERS
from .config import BaseParams, Params, PerplexityParams
from .model.formatting import IGNORE, encode, pad_batch
from .io import write_json
from .ledger import FilterResult, IdTally, drop
from .schema import last_turn_split, prompt_text, response_text
from .text_rules import check_record, repeated_replies, reply_key
from .twopass import DROP, KEEP, chunks, route


_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))


def without_placeholders(rec: dict) -> dict:
    """``rec`` with clean's PII placeholders cut out of every message (for scoring only)."""
    if not any(_PLACEHOLDER.search(m["content"]) for m in rec["messages"]):
        return rec
    return {**rec, "messages": [{**m, "content": _PLACEHOLDER.sub("", m["content"])} for m in rec["messages"]]}


def encode_for_scoring(tokenizer, rec: dict, ppl_params: PerplexityParams) -> tuple[list[int], list[bool]]:
    """Token ids and which positions are scored, per ``perplexity.mode`` and ``perplexity.template``
    (without PII placeholders under ``perplexity.skip_placeholders``)."""
    if ppl_params.skip_placeholders:
        rec = without_placeholders(rec)
    if ppl_params.template == "chat":
        # a row with tool calls is scored on every assistant part (the calls and the answer)
        loss_on = "all" if ppl_params.mode == "full" else (
            "response" if any(m.get("tool_calls") for m in rec["messages"]) else "last_turn")
        enc = encode(tokenizer, rec["messages"], loss_on=loss_on, tools=rec.get("tools"))
        scored = [lab != IGNORE for lab in enc.labels]
        ids = enc.input_ids
    else:
        history, reply = last_turn_split(rec)
        prompt = prompt_text({"messages": history}) if ppl_params.mode == "response" else ""
        response = reply if ppl_params.mode == "response" else prompt_text(rec) + "\n" + response_text(rec)
        pre = tokenizer(prompt + "\n", add_special_tokens=False)["input_ids"] if prompt else []
        body = tokenizer(response, add_special_tokens=False)["input_ids"] if response.strip() else []
        ids, scored = pre + body, [False] * len(pre) + [True] * len(body)
    return _fit(ids, scored, ppl_params.max_length)


# Config attributes with which a model's forward rescales or caps its logits after the LM head.
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier",
                         "lm_head_multiplier")


# fp32 logits held at once when scoring (elements): 2**26 = 256 MiB. A 152k-word vocabulary then takes
# ~440 positions a chunk; the whole scored batch at once would take rows x reply tokens x vocab x 4 bytes
# (52 GiB at batch 128 on an H100, and out of memory at 512).
LOGITS_CHUNK_ELEMENTS = 2**26


def _scored_nll(model, ids, att, keep, targets):
    """Negative log-likelihood (fp32) of ``targets`` at the positions where ``keep`` (batch, width - 1) is
    True, row-major.

    The LM head (vocab x hidden, a large share of a small model's FLOPs) and the softmax run only on
    scored positions: prompt and padding positions need no logits, and the scored ones go through the
    head in chunks of at most ``LOGITS_CHUNK_ELEMENTS`` logits, so memory does not grow with the batch
    times the vocabulary (each position's loss is computed alone, so chunking changes no number). Models
    whose forward post-processes the logits (soft-capping, scaling) go through their own forward instead.
    No KV cache: scoring reads each row once, and the config's ``use_cache=True`` would copy every layer's
    keys and values for nothing.
    """
    import torch
    from torch.nn.functional import cross_entropy

    cfg = model.config.get_text_config()
    if any(getattr(cfg, a, None) is not None for a in _LOGIT_POSTPROCESSING):
        logits = model(input_ids=ids, attention_mask=att, use_cache=False).logits[:, :-1][keep].float()
        return cross_entropy(logits, targets, reduction="none")
    hidden = model.base_model(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state[:, :-1][keep]
    head = model.get_output_embeddings()
    step = max(1, LOGITS_CHUNK_ELEMENTS // head.weight.shape[0])
    return torch.cat([cross_entropy(head(hidden[i:i + step]).float(), targets[i:i + step], reduction="none")
                      for i in range(0, hidden.shape[0], step)])


def _batches(order: list[int], lengths: list[int], batch_size: int, max_pad: float = 0.1) -> list[list[int]]:
    """Length-sorted ``order`` cut into batches of at most ``batch_size`` rows, closing a batch early when
    the next (longer) row would make padding exceed ``max_pad`` of the batch's real tokens."""
    out: list[list[int]] = []
    cur: list[int] = []
    real = 0
    for i in order:
        n = lengths[i]
        if cur and (len(cur) == batch_size or n * (len(cur) + 1) > (1 + max_pad) * (real + n)):
            out.append(cur)
            cur, real = [], 0
        cur.append(i)
        real += n
    if cur:
        out.append(cur)
    return out


def _batch_nll(model, pad: int, batch: list[tuple[list[int], list[bool]]]) -> list[float | None]:
    """Mean negative log-likelihood of the scored positions of each encoded row of one batch (None:
    nothing scored): the unit of work of both engines, so a batch scores the same wherever it runs."""
    import torch

    out: list[float | None] = [None] * len(batch)
    idx = [k for k, e in enumerate(batch) if any(e[1][1:])]
    if not idx:
        return out
    dev = next(model.parameters()).device
    with torch.inference_mode():
        ids, att, tgt = pad_batch([batch[k][0] for k in idx], pad,
                                  [[t if s else IGNORE for t, s in zip(*batch[k])] for k in idx])
        shift_t = tgt[:, 1:].to(dev)
        keep = shift_t != IGNORE
        nll = _scored_nll(model, ids.to(dev), att.to(dev), keep, shift_t[keep])
        # The per-row sums run on the CPU, where index_add_ adds in index order: on a GPU it adds with
        # atomics in whatever order threads finish, and the same rows scored twice on an H100 gave
        # different bits for half of them (bench/score_gpu.py --rerun-check), so data/perplexity's md5
        # would change on every rerun. The copy is one float per scored token.
        keep, nll = keep.cpu(), nll.cpu()
        row_of = torch.arange(len(idx))[:, None].expand_as(keep)[keep]
        n = keep.sum(1)
        total = torch.zeros(len(idx), dtype=nll.dtype).index_add_(0, row_of, nll)
        mean = (total / n.clamp(min=1)).tolist()
    for row, k in enumerate(idx):
        out[k] = mean[row]
    return out


def _mean_nll(model, tokenizer, encoded: list[tuple[list[int], list[bool]]], batch_size: int,
              progress=None) -> list[float | None]:
    """Mean negative log-likelihood of the scored positions of each encoded row (None: nothing scored),
    in length-sorted batches. ``model``: a causal LM here, or a :class:`RayModelPool` whose actors score
    the same batches (cut here, so the results do not depend on the number of actors)."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    out: list[float | None] = [None] * len(encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = _batches(order, [len(e[0]) for e in encoded], batch_size)
    work = ([encoded[i] for i in batch] for batch in batches)
    if isinstance(model, RayModelPool):
        results = model.map(pad, work)
    else:
        results = (_batch_nll(model, pad, w) for w in work)
    for batch, means in zip(batches, results):
        for i, m in zip(batch, means):
            out[i] = m
        if progress is not None:
            progress.update(len(batch))
    return out


class _NllActor:
    """A Ray actor holding one copy of the reference model: scores the batches the driver sends."""

    def __init__(self, model_params, precision: str, threads: int, fault: str | None):
        import torch

        from .model.loading import load_model

        torch.set_num_threads(threads)
        self.model = load_model(model_params, precision=precision).eval()
        self.fault = fault

    def nll(self, pad: int, batch: list[tuple[list[int], list[bool]]]) -> list[float | None]:
        from .ray_session import die_if_asked

        die_if_asked(self.fault)
        return _batch_nll(self.model, pad, batch)


class RayModelPool:
    """``perplexity.ray.actors`` Ray actors, each loading the model of ``model_params`` once, with
    ``num_cpus_per_actor`` CPUs (and as many torch threads) and ``num_gpus_per_actor`` GPUs. Pass it
    where :func:`score_rows` / :func:`ifd_rows` take the model: the driver still encodes the rows and cuts
    the length-sorted batches, the actors score them (an idle actor takes the next batch), and the
    results come back in input order. An actor whose process dies is restarted and its batch retried,
    up to ``ray.max_retries`` times. Needs a Ray connection (``sftpipe.ray_session.ray_session``);
    ``close()`` (or the ``with`` block's end) stops the actors."""

    def __init__(self, model_params, ppl_params: PerplexityParams, ray_params):
        import ray
        from ray.util import ActorPool

        from .ray_session import check_pool_fits, fault_for

        rp = ppl_params.ray
        self.max_retries = ray_params.max_retries
        check_pool_fits("perplexity.ray", rp)
        path = Path(model_params.name_or_path)
        if path.exists():   # a local directory: the workers may run elsewhere than this process's cwd
            model_params = model_params.model_copy(update={"name_or_path": str(path.resolve())})
        cls = ray.remote(_NllActor).options(num_cpus=rp.num_cpus_per_actor, num_gpus=rp.num_gpus_per_actor,
                                            max_restarts=self.max_retries, max_task_retries=self.max_retries)
        fault = fault_for("score")
        self.actors = [cls.remote(model_params, ppl_params.precision, rp.num_cpus_per_actor, fault)
                       for _ in range(rp.actors)]
        self.pool = ActorPool(self.actors)

    def map(self, pad: int, batches) -> Iterator[list[float | None]]:
        """Each batch's mean NLLs, in batch order."""
        from .ray_session import ray_errors

        with ray_errors("perplexity", "scoring a batch", self.max_retries):
            yield from self.pool.map(lambda actor, batch: actor.nll.remote(pad, batch), list(batches))

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def tokens_per_byte(tokenizer, encoded: list[tuple[list[int], list[bool]]]) -> list[float]:
    """Per encoded row: scored tokens over the UTF-8 bytes they decode to (1.0 when they decode to none).
    A mean loss per token times this is the mean loss per byte of the same text."""
    out = []
    for ids, scored in encoded:
        pos = [ids[t] for t in range(1, len(ids)) if scored[t]]
        n_bytes = len(tokenizer.decode(pos, skip_special_tokens=True).encode("utf-8")) if pos else 0
        out.append(len(pos) / n_bytes if n_bytes else 1.0)
    return out


def score_rows(model, tokenizer, records: list[dict], ppl_params: PerplexityParams,
               progress=None) -> list[float | None]:
    """Perplexity per row (None when there is nothing to score), per token or per UTF-8 byte of the
    scored text (``perplexity.unit``)."""
    encoded = [encode_for_scoring(tokenizer, r, ppl_params) for r in records]
    nll = _mean_nll(model, tokenizer, encoded, ppl_params.batch_size, progress)
    if ppl_params.unit == "byte":
        nll = [None if x is None else x * f for x, f in zip(nll, tokens_per_byte(tokenizer, encoded))]
    return [None if x is None else math.exp(min(x, 50.0)) for x in nll]


def _fit(ids: list[int], scored: list[bool], max_length: int) -> tuple[list[int], list[bool]]:
    """Cut to ``max_length`` keeping the scored tail: prompt tokens go from the left first."""
    if len(ids) > max_length:
        first = scored.index(True) if True in scored else 0
        cut = min(len(ids) - max_length, first)
        ids, scored = ids[cut:], scored[cut:]
        ids, scored = ids[:max_length], scored[:max_length]
    return ids, scored


def _ifd_encoding(tokenizer, rec: dict, ppl_params: PerplexityParams, with_prompt: bool):
    """The last reply's tokens after its prompt, or alone, both with only the reply scored and the same
    reply tokens either way. Plain layout: (prompt) newline reply, so each reply token is predicted from
    at least the newline. Chat layout: the conversation up to the last reply, or the last assistant
    message after an empty user turn."""
    if ppl_params.skip_placeholders:
        rec = without_placeholders(rec)
    if ppl_params.template == "plain":
        if with_prompt:
            p = ppl_params.model_copy(update={"mode": "response", "skip_placeholders": False})
            return encode_for_scoring(tokenizer, rec, p)
        _, reply = last_turn_split(rec)
        pre = tokenizer("\n", add_special_tokens=False)["input_ids"]
        body = tokenizer(reply, add_special_tokens=False)["input_ids"] if reply.strip() else []
        return _fit(pre + body, [False] * len(pre) + [True] * len(body), ppl_params.max_length)
    msgs = rec["messages"]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    if with_prompt:
        enc = encode(tokenizer, msgs[: last + 1], loss_on="last_turn", tools=rec.get("tools"))
    else:
        enc = encode(tokenizer, [{"role": "user", "content": ""}, msgs[last]], loss_on="last_turn")
    return _fit(enc.input_ids, [lab != IGNORE for lab in enc.labels], ppl_params.max_length)


def reply_nll(model, tokenizer, records: list[dict], ppl_params: PerplexityParams, progress=None) -> list[float | None]:
    """Mean loss of each row's last reply given the conversation before it (IFD's numerator), in the
    layout of ``perplexity.template``: a reward (its negative) for generated candidates."""
    return _mean_nll(model, tokenizer, [_ifd_encoding(tokenizer, r, ppl_params, True) for r in records],
                     ppl_params.batch_size, progress)


def ifd_rows(model, tokenizer, records: list[dict], ppl_params: PerplexityParams,
             conditioned_ppl: list[float | None] | None = None, progress=None) -> list[float | None]:
    """Instruction-following difficulty (Cherry LLM) per row: the last reply's mean loss given the
    conversation before it divided by its mean loss alone, with one reference LM, in the layout of
    ``perplexity.template``. Near or above 1: the prompt does not help predict the response
    (off-topic, wrong language, a canned answer). ``conditioned_ppl`` (the perplexity pass's scores)
    is reused in the plain response layout, where they are the same numbers, so IFD costs one extra
    pass over the (shorter) replies alone."""
    if conditioned_ppl is not None and ppl_params.mode == "response" and ppl_params.template == "plain":
        cond = [None if s is None else math.log(s) for s in conditioned_ppl]
        if ppl_params.unit == "byte":   # back to the mean per token: both losses are over the same reply tokens
            per_byte = tokens_per_byte(tokenizer, [encode_for_scoring(tokenizer, r, ppl_params) for r in records])
            cond = [None if c is None else c / f for c, f in zip(cond, per_byte)]
    else:
        cond = _mean_nll(model, tokenizer, [_ifd_encoding(tokenizer, r, ppl_params, True) for r in records],
                         ppl_params.batch_size)
    alone = _mean_nll(model, tokenizer, [_ifd_encoding(tokenizer, r, ppl_params, False) for r in records],
                      ppl_params.batch_size, progress)
    return [None if c is None or a is None or a <= 0 else c / a for c, a in zip(cond, alone)]


def group_key(rec: dict, group_by: str) -> str:
    """Bucket of a row for its thresholds, e.g. 'zh' or 'en/sentiment' (cc_net buckets per language)."""
    if group_by == "none":
        return "all"
    parts = {"lang": rec["meta"].get("lang") or "unknown", "source": rec["source"],
             "label": rec.get("label") or "unlabeled"}
    return "/".join(parts[k] for k in group_by.split("+"))


def bounds(ppls: np.ndarray, ppl_params: PerplexityParams) -> tuple[float, float, dict]:
    """(lower, upper, {bound: rule}) for one group of scores; the tightest rule wins."""
    lo, hi, rule = 0.0, math.inf, {"lower": None, "upper": None}

    def tighten(value, side, name):
        nonlocal lo, hi
        if side == "lower" and value > lo:
            lo, rule["lower"] = value, name
        if side == "upper" and value < hi:
            hi, rule["upper"] = value, name

    if len(ppls):
        logs = np.log(ppls)
        if ppl_params.lower_quantile is not None:
            tighten(float(np.quantile(ppls, ppl_params.lower_quantile)), "lower", "lower_quantile")
        if ppl_params.upper_quantile is not None:
            tighten(float(np.quantile(ppls, ppl_params.upper_quantile)), "upper", "upper_quantile")
        if ppl_params.mad_k is not None and len(ppls) >= 10:
            med = float(np.median(logs))
            mad = 1.4826 * float(np.median(np.abs(logs - med)))
            if mad > 0:
                tighten(math.exp(med - ppl_params.mad_k * mad), "lower", "mad")
                tighten(math.exp(med + ppl_params.mad_k * mad), "upper", "mad")
    if ppl_params.min_ppl is not None:
        tighten(ppl_params.min_ppl, "lower", "min_ppl")
    if ppl_params.max_ppl is not None:
        tighten(ppl_params.max_ppl, "upper", "max_ppl")
    return lo, hi, rule


def _sig(x: float) -> float:
    return float(f"{x:.5g}")


def group_limits(keys: list[str], scores: list[float | None], ppl_params: PerplexityParams) -> dict[str, tuple]:
    """{group: (lower, upper, {bound: rule})} from every row's group key and score, groups sorted."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(keys):
        groups[g].append(i)
    return {g: bounds(np.array([scores[i] for i in idx if scores[i] is not None], dtype=float), ppl_params)
            for g, idx in sorted(groups.items())}


def judge_row(rec: dict, score: float | None, ifd: float | None, g: str, limits: dict, ppl_params: PerplexityParams,
              with_ifd: bool, repeated: int | None = None) -> tuple[str, dict]:
    """One row as the stage writes it: (KEEP, record with meta.ppl, ppl_group and meta.ifd if
    ``with_ifd``) or (DROP, ledger row naming the text rule, bound or IFD cap that cut it). ``repeated``:
    the number of different requests the row's reply answers when the ``repeated_reply`` rule holds
    (:func:`.text_rules.repeated_replies`), checked last, so a row another rule or bound cuts keeps that reason."""
    lo, hi, rule = limits[g]
    out = {**rec, "meta": {**rec["meta"], "ppl": None if score is None else _sig(score), "ppl_group": g}}
    if with_ifd:
        out["meta"]["ifd"] = None if ifd is None else _sig(ifd)
    ev = {"ppl": out["meta"]["ppl"], "lower": _sig(lo), "upper": None if math.isinf(hi) else _sig(hi), "group": g}
    rules = ppl_params.rules
    hit = check_record(rec, rules) if rules.enabled else None
    if hit is not None:   # the rule's evidence first: clearer than a score (which is kept beside it)
        return DROP, drop(out, "perplexity", hit[0], **hit[1], ppl=ev["ppl"], group=g)
    if score is None:
        return DROP, drop(out, "perplexity", "unscorable", **ev)
    if score > hi:
        return DROP, drop(out, "perplexity", "perplexity_high", rule=rule["upper"], **ev)
    if score < lo:
        return DROP, drop(out, "perplexity", "perplexity_low", rule=rule["lower"], **ev)
    if with_ifd and ppl_params.max_ifd is not None and ifd is not None and ifd > ppl_params.max_ifd:
        return DROP, drop(out, "perplexity", "ifd_high", ifd=out["meta"]["ifd"], max_ifd=ppl_params.max_ifd, **ev)
    if repeated is not None:
        return DROP, drop(out, "perplexity", "repeated_reply", requests=repeated,
                          max_overlap=ppl_params.rules.reply_overlap, **ev)
    return KEEP, out


def _summary(limits: dict, scores: list[float | None]) -> tuple[dict, dict]:
    """(extra metrics, details) of a filtered run: the median perplexity and each group's bounds."""
    bounds_out = {g: {"lower": _sig(lo), "upper": None if math.isinf(hi) else _sig(hi),
                      "lower_rule": rule["lower"], "upper_rule": rule["upper"]}
                  for g, (lo, hi, rule) in limits.items()}
    valid = [s for s in scores if s is not None]
    return ({"median_ppl": _sig(float(np.median(valid))) if valid else None, "groups": len(limits)},
            {"bounds": bounds_out})


def perplexity_filter(records: list[dict], scores: list[float | None], ppl_params: PerplexityParams,
                      ifd: list[float | None] | None = None) -> FilterResult:
    """The filter on rows in memory (:func:`filter_file` streams a file to the same bytes)."""
    keys = [group_key(r, ppl_params.group_by) for r in records]
    limits = group_limits(keys, scores, ppl_params)
    repeated = repeated_replies([reply_key(r, ppl_params.rules) for r in records], ppl_params.rules)
    kept, dropped = [], []
    for i, r in enumerate(records):
        kind, row = judge_row(r, scores[i], None if ifd is None else ifd[i], keys[i], limits, ppl_params,
                              ifd is not None, repeated[i])
        (kept if kind == KEEP else dropped).append(row)
    extra, details = _summary(limits, scores)
    return FilterResult(kept, dropped, extra, details)


@dataclass
class Scan:
    """The first pass over a file: per row its group key, perplexity and IFD (None: not scored), and the
    ids read (the second pass checks it reads the same rows)."""
    keys: list[str] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    ifd: list[float | None] | None = None
    ids: IdTally = field(default_factory=IdTally)
    reply_keys: list = field(default_factory=list)    # text_rules.reply_key per row (repeated_reply)


def scan_file(path, chunk_rows: int, ppl_params: PerplexityParams,
              score_chunk: Callable[[list[dict]], tuple[list, list | None]]) -> Scan:
    """Score ``path`` ``chunk_rows`` records at a time: ``score_chunk(rows)`` gives (perplexities, IFDs or
    None). Batches are length-sorted within a chunk, so the scores depend on ``chunk_rows`` (in the last
    bits) and not on anything else; a file of at most ``chunk_rows`` rows scores as one list."""
    scan = Scan()
    for chunk in chunks(path, chunk_rows, scan.ids):
        scan.keys.extend(sys.intern(group_key(r, ppl_params.group_by)) for r in chunk)
        scan.reply_keys.extend(reply_key(r, ppl_params.rules) for r in chunk)
        s, f = score_chunk(chunk)
        scan.scores.extend(s)
        if f is not None:
            if scan.ifd is None:
                scan.ifd = []
            scan.ifd.extend(f)
    return scan


def filter_file(path, out_dir, metrics_path, scan: Scan | None, ppl_params: PerplexityParams,
                extra: dict | None = None) -> tuple[dict, dict[str, dict], list[list]]:
    """The second pass: the rows of ``path`` again, judged on ``scan``'s scores and written to ``out_dir``
    (kept, ledger, details.json) with the metrics, the bytes :func:`perplexity_filter` +
    ``write_filter_outputs`` write. ``scan`` None: nothing scored (the stage is disabled), every row
    kept as it is. Returns (metrics, :func:`plot_groups`, :func:`histogram_rows`)."""
    if scan is None:
        out = route("perplexity", path, out_dir, None, lambda i, rec: (KEEP, rec))
        m = out.counts({"skipped": "disabled", **(extra or {})})
        write_json(metrics_path, m)
        return m, {}, []
    limits = group_limits(scan.keys, scan.scores, ppl_params)
    with_ifd = scan.ifd is not None
    kept = bytearray(len(scan.keys))
    repeated = repeated_replies(scan.reply_keys, ppl_params.rules)

    def decide(i, rec):
        kind, row = judge_row(rec, scan.scores[i], scan.ifd[i] if with_ifd else None, scan.keys[i], limits,
                              ppl_params, with_ifd, repeated[i])
        kept[i] = kind == KEEP
        return kind, row

    out = route("perplexity", path, out_dir, scan.ids, decide)
    metrics, details = _summary(limits, scan.scores)
    write_json(Path(out_dir) / "details.json", details)
    m = out.counts({**metrics, **(extra or {})})
    write_json(metrics_path, m)
    # the plots' points: kept rows then dropped rows, each in input order, as the in-memory result lists them
    order = [i for i in range(len(kept)) if kept[i]] + [i for i in range(len(kept)) if not kept[i]]
    points = [(scan.keys[i], None if scan.scores[i] is None else _sig(scan.scores[i]), bool(kept[i]))
              for i in order]
    return m, _plot_points(points, details["bounds"]), _histogram_points(points)
def _result_points(result: FilterResult) -> list[tuple[str | None, float | None, bool]]:
    """(group, ppl, kept?) of every row of a result, kept rows first."""
    rows = [(r, True) for r in result.kept] + [(d["record"], False) for d in result.dropped]
    return [(r["meta"].get("ppl_group"), r["meta"].get("ppl"), k) for r, k in rows]


def histogram_rows(result: FilterResult, bins: int = 40) -> list[list]:
    """Plot rows (group, log10 ppl bin centre, kept, dropped): the cut shows where 'dropped' starts."""
    return _histogram_points(_result_points(result), bins)


def _histogram_points(points: list[tuple], bins: int = 40) -> list[list]:
    pts = [(g, p, k) for g, p, k in points if p]
    if not pts:
        return []
    logs = np.log10([p for _, p, _ in pts])
    edges = np.linspace(logs.min(), logs.max() + 1e-9, bins + 1)
    table: dict = defaultdict(lambda: [0, 0])
    for (g, _, k), x in zip(pts, logs):
        b = min(int(np.searchsorted(edges, x, side="right")) - 1, bins - 1)
        table[(g, b)][0 if k else 1] += 1
    return [[g, round(float((edges[b] + edges[b + 1]) / 2), 3), k, d] for (g, b), (k, d) in sorted(table.items())]


def plot_groups(result: FilterResult) -> dict[str, dict]:
    """Per group: every scored row's perplexity (kept and dropped) and the group's cut bounds, the
    input of :func:`sftpipe.plots.perplexity_png`."""
    return _plot_points(_result_points(result), result.details.get("bounds", {}))


def _plot_points(points: list[tuple], bounds_of: dict) -> dict[str, dict]:
    out = {g: {"scores": [], "lower": b["lower"] or None, "upper": b["upper"]} for g, b in bounds_of.items()}
    for g, p, _ in points:
        if p is not None and g in out:
            out[g]["scores"].append(p)
    return out


# --------------------------------------------------------------------------- the reference LM

BUILTIN_BASE = "models/base"    # where the base stage writes the built-in base model
SAMPLE_DIR = "data/raw"         # where the sample stage writes its source files


def reference_choice(params: Params) -> tuple[str, str]:
    """Which reference LM scores the rows, ``"model"`` or ``"fit"``, and why (``perplexity.reference``).

    ``auto`` is ``fit`` exactly when nothing names another model (``perplexity.model`` unset,
    ``model.name_or_path`` the built-in base) and some source is not one of the sample's files: the
    built-in base was pretrained on the sample's kind of text only. On the sample it stays ``model``."""
    from .sample import SOURCES

    p = params.perplexity
    if p.reference != "auto":
        return p.reference, f"perplexity.reference is {p.reference}"
    if p.model is not None:
        return "model", f"perplexity.model is set ({p.model})"
    if os.path.normpath(params.model.name_or_path) != os.path.normpath(BUILTIN_BASE):
        return "model", f"model.name_or_path ({params.model.name_or_path}) is not the built-in base"
    sample_files = {os.path.normpath(os.path.join(SAMPLE_DIR, f)) for f in SOURCES.values()}
    other = [s.path for s in params.collect.sources if os.path.normpath(s.path) not in sample_files]
    if not other:
        return "model", "the sources are the sample's files, the kind of text the built-in base was pretrained on"
    more = f" and {len(other) - 2} more" if len(other) > 2 else ""
    return "fit", (f"the built-in base knows only the sample's kind of text and {len(other)} source(s) are not "
                   f"the sample's ({', '.join(other[:2])}{more})")


def scoring_unit(ppl_params: PerplexityParams, kind: str) -> str:
    """``perplexity.unit`` for a reference of ``kind`` (``"model"`` or ``"fit"``): ``auto`` is ``byte`` for a
    fitted reference, whose small vocabulary cuts garbage into far shorter tokens than ordinary text
    (bench/reference_lm.py: keyboard mash cut by perplexity 5 of 28 per token, 28 of 28 per byte), and
    ``token`` for a model (on the sample with the built-in base, per byte dropped 3 more defect-free rows and 7
    more tool rows for the same garbage)."""
    if ppl_params.unit != "auto":
        return ppl_params.unit
    return "byte" if kind == "fit" else "token"


def reference_text(rec: dict, skip_placeholders: bool = True) -> str:
    """A row as the fitted reference LM reads it in training: prompt, newline, response (the plain
    layout of the base model's pretraining documents), without PII placeholders if they are skipped
    in scoring."""
    if skip_placeholders:
        rec = without_placeholders(rec)
    return (prompt_text(rec) + "\n" + response_text(rec)).strip()


def fit_steps(n_tokens: int, ppl_params: PerplexityParams, base_params: BaseParams) -> int:
    """Training steps for ``perplexity.fit_epochs`` passes over ``n_tokens`` tokens, at most
    ``perplexity.fit_max_steps`` (None: ``base.steps``)."""
    per_step = base_params.batch_size * base_params.seq_len
    cap = ppl_params.fit_max_steps or base_params.steps
    return max(1, min(cap, math.ceil(ppl_params.fit_epochs * n_tokens / per_step)))


def fit_reference(records: Iterable[dict], ppl_params: PerplexityParams, base_params: BaseParams,
                  out_dir: str | Path, log=print) -> dict:
    """Train a fresh tokenizer and a small LM (``base``'s architecture, optimiser and seed) on the text
    of ``records``, for :func:`fit_steps` steps; save it to ``out_dir`` like a hub model. Returns a
    summary (rows, tokens, steps, epochs, final loss, seconds).

    Garbage rows are in the training text too: they are a minority and the budget is about one pass,
    so the model learns what is typical of the data rather than memorising rows."""
    from .errors import UserError
    from .model.basemodel import pretrain, train_tokenizer

    t0 = time.perf_counter()
    corpus = [t for t in (reference_text(r, ppl_params.skip_placeholders) for r in records) if t]
    vocab = ppl_params.fit_vocab_size or base_params.vocab_size
    tokenizer = train_tokenizer(corpus, vocab)
    n_tokens = sum(len(x) + 1 for x in tokenizer(corpus, add_special_tokens=False)["input_ids"])
    if n_tokens < base_params.seq_len:
        raise UserError(f"perplexity: {n_tokens} tokens of text are too few to fit a reference LM (base.seq_len "
                        f"is {base_params.seq_len}); set perplexity.reference: model")
    steps = fit_steps(n_tokens, ppl_params, base_params)
    bp = base_params.model_copy(update={"steps": steps, "vocab_size": vocab})
    summary = pretrain(bp, corpus, out_dir, log=log, tokenizer=tokenizer, name="reference")
    epochs = steps * base_params.batch_size * base_params.seq_len / n_tokens
    return {"rows": len(corpus), "tokens": n_tokens, "steps": steps, "epochs": round(epochs, 3),
            "vocab_size": summary["vocab_size"], "params_m": summary["params_m"],
            "final_loss": summary["final_loss"], "fit_s": round(time.perf_counter() - t0, 1)}
