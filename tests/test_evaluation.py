"""Generation, loss and deltas on a model whose output depends on its prompt.

The model is the lookup model (tests/lookup_model.py): greedy decoding reproduces a known reply
for every prompt, so these tests compare real text, not the empty strings a random model emits.
"""

import math

import pytest
import torch

from lookup_model import LOOKUP, lookup_rows
from sftpipe.config import ModelParams
from sftpipe.evaluation import deltas, deltas_markdown, generate, response_loss
from sftpipe.formatting import IGNORE, encode
from sftpipe.modeling import load_model, load_tokenizer

ROWS = lookup_rows()
REPLIES = [a for _, a in LOOKUP]


@pytest.fixture(scope="module")
def lm(lookup_model_dir):
    mp = ModelParams(name_or_path=str(lookup_model_dir))
    return load_model(mp).eval(), load_tokenizer(mp)


def test_generation_returns_only_the_reply_for_every_prompt(lm):
    """One batch holds every prompt, the shortest left-padded by ~10x its length: each output is
    exactly the learned reply (no prompt text, nothing attended from the padding)."""
    model, tok = lm
    assert generate(model, tok, ROWS, max_new_tokens=24, batch_size=len(ROWS)) == REPLIES


def test_batched_generation_matches_single_rows(lm):
    model, tok = lm
    single = [generate(model, tok, [r], max_new_tokens=24, batch_size=1)[0] for r in ROWS]
    assert all(single) and len(set(single)) == len(ROWS), "generations must be non-empty and prompt-dependent"
    for batch_size in (5, len(ROWS)):  # batches of mixed composition and heavy left padding
        assert generate(model, tok, ROWS, max_new_tokens=24, batch_size=batch_size) == single


def test_generation_masks_exactly_the_left_padding(lm):
    model, tok = lm
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def generate(self, **kw):
            seen.append({k: kw[k].clone() for k in ("input_ids", "attention_mask")})
            return model.generate(**kw)

    generate(Spy(), tok, ROWS, max_new_tokens=4, batch_size=len(ROWS))
    (call,) = seen
    prompt_lens = {len(encode(tok, r["messages"]).input_ids[:encode(tok, r["messages"]).prompt_len]) for r in ROWS}
    ids, att = call["input_ids"], call["attention_mask"]
    width = ids.shape[1]
    assert width == max(prompt_lens) and len(prompt_lens) > 3
    for row in range(len(ROWS)):
        n = int(att[row].sum())
        assert n in prompt_lens
        assert att[row, :width - n].eq(0).all() and att[row, width - n:].eq(1).all()  # left padding, masked
        assert ids[row, :width - n].eq(tok.pad_token_id).all()


def test_response_loss_is_token_weighted_over_reply_tokens(lm):
    """Reply lengths differ (1 to ~12 tokens), so the mean of per-batch means would differ from this."""
    model, tok = lm
    nll, n = response_loss(model, tok, ROWS, batch_size=3, max_length=128)
    total, count = 0.0, 0
    with torch.inference_mode():
        for r in ROWS:
            e = encode(tok, r["messages"], "response", 128)
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0, :-1]
            target = torch.tensor(e.labels[1:])
            keep = target != IGNORE
            total += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
            count += int(keep.sum())
            # every row is scored on its reply plus the end-of-turn marker, nothing else
            assert int(keep.sum()) == len(tok(r["messages"][-1]["content"], add_special_tokens=False)["input_ids"]) + 1
    assert n == count
    assert nll == pytest.approx(total / count, rel=1e-5)
    assert math.isfinite(nll) and nll < 0.5, "the lookup model has learned these replies"


def test_deltas_and_markdown():
    base = {"loss": 2.0, "rougeL": 0.1, "exact_match": 0.0, "target_tokens": 10}
    sft = {"loss": 1.0, "rougeL": 0.6, "exact_match": 0.5, "target_tokens": 10}
    assert deltas(base, sft) == {"loss": -1.0, "rougeL": 0.5, "exact_match": 0.5}
    md = deltas_markdown(base, sft, {"c": {"rows": 3, "base": base, "sft": sft}})
    assert "| rougeL | 0.1000 | 0.6000 | +0.5000 |" in md and "| c | 3 |" in md
