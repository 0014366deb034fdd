"""Reward-model scores: any ``AutoModelForSequenceClassification`` with one output (one logit per row).

Each row is rendered the way the reward model expects it: under ``template: auto`` with the
model's own chat template when its tokenizer has one (the whole conversation, tools included),
else, and under ``template: plain``, as ``prompt + "\\n" + response`` (the last assistant turn
after the turns before it). Rows longer than ``max_length`` tokens lose tokens from the front
(a leading BOS is kept), so the end of the reply, where a causal reward model reads its score,
is always there.

Batching must not change a score. Rows are sorted by length and cut into batches that waste
little on padding (:func:`sftpipe.perplexity._batches`), padded on the right (positions stay
0..n-1, so no model needs position ids for it) and run under ``torch.inference_mode``. Sequence
classifiers built on causal LMs (LLaMA, Qwen, Mistral, ...) pool the rightmost token that is not
``config.pad_token_id``:

* with a pad id in the config, rows are padded with it, so the pooled token is the one the model
  pools for the row alone;
* with none (where HF refuses batches of more than one row), each batch pads with an id that
  ends none of its rows, set as the pad id for that call only, so the pooled token is each row's
  last one, as for the row alone.

Loading follows :mod:`sftpipe.model.loading`: safetensors only, ``trust_remote_code`` and
``revision`` from params, a hub token only from ``HF_TOKEN``; the GPU in bf16 when present, fp32
on CPU. Scores come back as Python floats in input order (None for a row with no tokens).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from ..config import ModelParams, RewardModelParams
from ..errors import UserError
from ..model.formatting import chat_messages, chat_tools, pad_batch
from ..model.loading import _hub_kwargs, device, dtype_for, load_tokenizer
from ..perplexity import _batches
from ..schema import last_turn_split, prompt_text

log = logging.getLogger(__name__)


def _model_params(params: RewardModelParams) -> ModelParams:
    return ModelParams(name_or_path=params.model, revision=params.revision, trust_remote_code=params.trust_remote_code)


def _looks_local(path: str) -> bool:
    """A path that is not a hub id ("org/name"): absolute, ./ ../ ~, more than one "/", or under a local folder."""
    return (Path(path).is_absolute() or path.startswith((".", "~")) or path.count("/") > 1
            or ("/" in path and Path(path.split("/")[0]).is_dir()))


def load_reward_model(params: RewardModelParams):
    """(model in eval mode on the device, tokenizer) for ``params.model``; UserError when it cannot load."""
    from transformers import AutoModelForSequenceClassification

    path = params.model
    if not path:
        raise UserError("reward_model.model is not set: give a local directory or a hub id")
    where = "local directory" if Path(path).exists() else "hub id"
    if where == "hub id" and _looks_local(path):
        raise UserError(f"reward model {path}: no such directory")
    mp = _model_params(params)
    tokenizer = load_tokenizer(mp, path)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=dtype_for("auto"), use_safetensors=True, **_hub_kwargs(mp))
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot load reward model from {path} ({where}): {first}") from None
    if model.config.num_labels != 1:
        raise UserError(f"reward model {path} has {model.config.num_labels} outputs per row; a reward model "
                        f"has exactly 1 (num_labels=1)")
    return model.to(device()).eval(), tokenizer


def render(tokenizer, rec: dict, template: str) -> tuple[str, bool]:
    """(text, whether the tokenizer should add its special tokens): the chat template's rendering of
    the conversation, or ``prompt\\nresponse``."""
    if template == "auto" and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(chat_messages(rec["messages"]), tools=chat_tools(rec.get("tools")),
                                             tokenize=False)
        return text, False          # the template writes its own BOS and markers
    history, reply = last_turn_split(rec)
    prompt = prompt_text({"messages": history})
    return (f"{prompt}\n{reply}" if prompt else reply), True


def encode_for_reward(tokenizer, rec: dict, params: RewardModelParams) -> list[int]:
    """Token ids of one row, at most ``max_length``: cut from the front, keeping a leading BOS."""
    text, special = render(tokenizer, rec, params.template)
    ids = tokenizer(text, add_special_tokens=special)["input_ids"]
    if len(ids) > params.max_length:
        bos = tokenizer.bos_token_id
        keep_bos = bos is not None and ids[0] == bos
        ids = ([bos] if keep_bos else []) + ids[len(ids) - params.max_length + keep_bos:]
    return ids


@contextmanager
def _pad_id(model, pad_id: int):
    """``pad_token_id`` set on the model's (text) config for the duration of one call."""
    cfgs = {id(c): c for c in (model.config, model.config.get_text_config())}.values()
    old = [(c, c.pad_token_id) for c in cfgs]
    try:
        for c, _ in old:
            c.pad_token_id = pad_id
        yield
    finally:
        for c, v in old:
            c.pad_token_id = v


def _free_pad_id(candidates: list[int | None], last_tokens: set[int], vocab: int) -> int:
    """The first candidate (else the smallest id) that is no row's last token."""
    for c in candidates:
        if c is not None and c not in last_tokens:
            return c
    return next(i for i in range(vocab + len(last_tokens) + 1) if i not in last_tokens)


def score_encoded(model, encoded: list[list[int]], batch_size: int, fallback_pad: int | None = None,
                  progress=None) -> list[float | None]:
    """Reward per token-id row, batched by length (see the module docstring)."""
    import torch

    out: list[float | None] = [None] * len(encoded)
    order = sorted((i for i in range(len(encoded)) if encoded[i]), key=lambda i: len(encoded[i]))
    if progress is not None and len(order) < len(encoded):
        progress.update(len(encoded) - len(order))
    dev = next(model.parameters()).device
    config_pad = model.config.get_text_config().pad_token_id
    with torch.inference_mode():
        for batch in _batches(order, [len(e) for e in encoded], batch_size):
            seqs = [encoded[i] for i in batch]
            if config_pad is not None:
                pad = config_pad
            else:
                pad = _free_pad_id([fallback_pad, 0], {s[-1] for s in seqs}, model.config.get_text_config().vocab_size)
            ids, att, _ = pad_batch(seqs, pad)
            with _pad_id(model, pad):
                logits = model(input_ids=ids.to(dev), attention_mask=att.to(dev)).logits
            for row, value in zip(batch, logits[:, 0].float().cpu().tolist()):
                out[row] = value
            if progress is not None:
                progress.update(len(batch))
    return out


def reward_rows(records: list[dict], params: RewardModelParams, progress=None) -> list[float | None]:
    """The reward model's score for every record, in input order (None: nothing to score)."""
    model, tokenizer = load_reward_model(params)
    encoded = []
    failed = 0
    for rec in records:
        try:
            encoded.append(encode_for_reward(tokenizer, rec, params))
        except Exception as e:  # a chat template that raises on this conversation (jinja's raise_exception)
            if type(e).__name__ not in ("TemplateError", "TemplateSyntaxError", "UndefinedError"):
                raise
            if failed == 0:
                log.warning("reward model %s: its chat template fails on row %s (%s); such rows get no score",
                            params.model, rec.get("id"), " ".join(str(e).split())[:200])
            failed += 1
            encoded.append([])
    if failed:
        log.warning("reward model %s: %d of %d rows not scored (chat template errors)", params.model, failed,
                    len(records))
    return score_encoded(model, encoded, params.batch_size, tokenizer.pad_token_id, progress)
