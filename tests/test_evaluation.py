"""Batched left-padded greedy generation equals one-by-one generation; loss and deltas."""

import pytest

from sftpipe.config import ModelParams
from sftpipe.evaluation import deltas, deltas_markdown, generate, response_loss
from sftpipe.modeling import load_model, load_tokenizer

ROWS = [{"id": str(i), "label": "x", "meta": {}, "messages": [{"role": "user", "content": p},
                                                             {"role": "assistant", "content": "ok"}]}
        for i, p in enumerate(["hi", "What is the capital of France?", "请把“红色的猫”翻译成英文。",
                               "Reverse the order of these words: apple river stone cloud tiger"])]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    mp = ModelParams(name_or_path=str(tiny_model_dir))
    return load_model(mp).eval(), load_tokenizer(mp)


def test_batched_generation_matches_single_rows(lm):
    model, tok = lm
    batched = generate(model, tok, ROWS, max_new_tokens=12, batch_size=4)
    single = [generate(model, tok, [r], max_new_tokens=12, batch_size=1)[0] for r in ROWS]
    assert batched == single and all(isinstance(x, str) for x in batched)


def test_response_loss_counts_only_reply_tokens(lm):
    model, tok = lm
    nll, n = response_loss(model, tok, ROWS, batch_size=2, max_length=128)
    # "ok" plus the end-of-turn marker per row, shifted: every row contributes its reply tokens
    per_row = len(tok("ok", add_special_tokens=False)["input_ids"]) + 1
    assert n == per_row * len(ROWS) and nll > 0


def test_deltas_and_markdown():
    base = {"loss": 2.0, "rougeL": 0.1, "exact_match": 0.0, "target_tokens": 10}
    sft = {"loss": 1.0, "rougeL": 0.6, "exact_match": 0.5, "target_tokens": 10}
    assert deltas(base, sft) == {"loss": -1.0, "rougeL": 0.5, "exact_match": 0.5}
    md = deltas_markdown(base, sft, {"c": {"rows": 3, "base": base, "sft": sft}})
    assert "| rougeL | 0.1000 | 0.6000 | +0.5000 |" in md and "| c | 3 |" in md
