"""Generation, loss and deltas on a model whose output depends on its prompt.

The model is the lookup model (tests/lookup_model.py): greedy decoding reproduces a known reply
for every prompt, so these tests compare real text, not the empty strings a random model emits.
"""

import math

import pytest
import torch

from lookup_model import LOOKUP, lookup_rows
from sftpipe.config import ModelParams
from sftpipe.errors import UserError
from sftpipe.model.evaluation import deltas, deltas_markdown, generate, read_general_text, response_loss, text_loss
from sftpipe.model.formatting import IGNORE, encode
from sftpipe.model.loading import load_model, load_tokenizer

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


def test_text_loss_is_token_weighted_over_every_token_but_the_first(lm):
    """The forgetting check: plain texts of very different lengths, token-weighted, cut to max_length."""
    model, tok = lm
    texts = ["The capital of France is Paris.", "hi", "red cat " * 50, "   ", "法国的首都是巴黎。"]
    nll, n = text_loss(model, tok, texts, batch_size=2, max_length=40)
    total, count = 0.0, 0
    with torch.inference_mode():
        for t in texts:
            ids = tok(t)["input_ids"][:40]
            if not t.strip() or len(ids) < 2:
                continue
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
            total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum"))
            count += len(ids) - 1
    assert n == count and count < 2 * 40 + 20        # the long text was cut
    assert nll == pytest.approx(total / count, rel=1e-5)


def test_general_text_files(tmp_path):
    (tmp_path / "g.jsonl").write_text('{"text": "a b"}\n\n{"text": "c"}\n', encoding="utf-8")
    assert read_general_text(tmp_path / "g.jsonl") == ["a b", "c"]
    (tmp_path / "g.txt").write_text("one doc\nstill one\n\nsecond\n\n\n", encoding="utf-8")
    assert read_general_text(tmp_path / "g.txt") == ["one doc\nstill one", "second"]
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"txt": "b"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl:2: field 'text'"):
        read_general_text(tmp_path / "bad.jsonl")
    with pytest.raises(UserError, match="does not exist"):
        read_general_text(tmp_path / "missing.txt")


def test_deltas_and_markdown():
    base = {"loss": 2.0, "rougeL": 0.1, "exact_match": 0.0, "target_tokens": 10}
    sft = {"loss": 1.0, "rougeL": 0.6, "exact_match": 0.5, "target_tokens": 10}
    assert deltas(base, sft) == {"loss": -1.0, "rougeL": 0.5, "exact_match": 0.5}
    md = deltas_markdown(base, sft, {"c": {"rows": 3, "base": base, "sft": sft}})
    assert "| rougeL | 0.1000 | 0.6000 | +0.5000 |" in md and "| c | 3 |" in md


def test_text_metrics_gathers_the_three_modules_rounded_to_4_places():
    import sacrebleu

    from sftpipe.model.evaluation import text_metrics

    preds, refs = ["红色的猫", "Positive."], ["红色的狗", "positive"]
    out = text_metrics(preds, refs)
    # ROUGE-1/L per row: 3 of 4 characters (0.75), then the same word (1.0); ROUGE-2: 2 of 3 bigrams, then none
    bleu = sacrebleu.corpus_bleu(preds, [refs], tokenize="zh").score
    chrf = sacrebleu.corpus_chrf(preds, [refs]).score
    assert out == {"rouge1": 0.875, "rouge2": 0.3333, "rougeL": 0.875, "bleu": round(bleu, 4),
                   "chrf": round(chrf, 4), "exact_match": 0.5}
    assert all(type(v) is float for v in out.values())
    assert chrf != round(chrf, 4) and bleu != sacrebleu.corpus_bleu(preds, [refs], tokenize="13a").score


def test_per_category_scores_each_label_on_its_own_rows():
    from sftpipe.model.evaluation import per_category, text_metrics

    rows = [{**r, "label": label} for r, label in zip(lookup_rows(), ["b", "a", None, "a"])]
    # a two-turn conversation: the reference is the last reply
    rows[3] = {**rows[3], "messages": rows[0]["messages"] + rows[3]["messages"]}
    refs = [r["messages"][-1]["content"] for r in rows]
    assert refs[3] == REPLIES[3]
    base = [refs[0], "wrong", refs[2], refs[3]]
    sft = ["wrong", refs[1], "wrong", refs[3]]
    cats = per_category(rows, {"base": base, "sft": sft})
    assert list(cats) == ["a", "b", "unlabeled"]                 # sorted; no label -> "unlabeled"
    assert cats["a"] == {"rows": 2, "base": text_metrics(["wrong", refs[3]], [refs[1], refs[3]]),
                         "sft": text_metrics([refs[1], refs[3]], [refs[1], refs[3]])}
    assert [cats[c]["rows"] for c in cats] == [2, 1, 1]
    assert [cats[c]["base"]["exact_match"] for c in cats] == [0.5, 1.0, 1.0]
    assert [cats[c]["sft"]["exact_match"] for c in cats] == [1.0, 0.0, 0.0]


def test_score_model_reports_loss_perplexity_and_text_metrics_against_the_last_reply(monkeypatch):
    import sftpipe.model.evaluation as ev

    rows = lookup_rows()[:3]
    rows[1] = {**rows[1], "messages": rows[0]["messages"] + rows[1]["messages"]}   # two turns: the last reply counts
    model, tok, progress = object(), object(), object()
    generated = [REPLIES[0], REPLIES[1], "something else"]
    calls = []

    def fake_loss(*args):
        calls.append(("loss", args))
        return 0.5, 17

    def fake_generate(*args):
        calls.append(("generate", args))
        return generated

    monkeypatch.setattr(ev, "response_loss", fake_loss)
    monkeypatch.setattr(ev, "generate", fake_generate)
    metrics, preds = ev.score_model("sft", model, tok, rows, 24, 3, 128, progress)
    assert calls == [("loss", (model, tok, rows, 3, 128)), ("generate", (model, tok, rows, 24, 3, progress))]
    assert preds == generated
    assert metrics == {"loss": 0.5, "perplexity": 1.6487, "target_tokens": 17,             # e ** 0.5, 4 places
                       **ev.text_metrics(generated, REPLIES[:3])}
    assert metrics["exact_match"] == pytest.approx(2 / 3, abs=1e-4)
    # a diverged model: the perplexity saturates at exp(50) instead of overflowing
    monkeypatch.setattr(ev, "response_loss", lambda *a: (800.0, 17))
    assert ev.score_model("sft", model, tok, rows, 24, 3, 128)[0]["perplexity"] == round(math.exp(50), 4)


def test_deltas_are_rounded_to_4_places_and_skip_the_token_count():
    base = {"loss": 2.0, "rougeL": 0.12344, "exact_match": 0.0, "target_tokens": 10, "only_base": 1.0}
    sft = {"loss": 1.5, "rougeL": 0.12346, "exact_match": 0.5, "target_tokens": 12}
    assert deltas(base, sft) == {"loss": -0.5, "rougeL": 0.0, "exact_match": 0.5}


def test_deltas_markdown_is_the_whole_report():
    base = {"loss": 2.0, "perplexity": 7.3891, "rougeL": 0.12344, "exact_match": 0.0, "target_tokens": 10}
    sft = {"loss": 1.5, "perplexity": 4.4817, "rougeL": 0.12346, "exact_match": 0.5, "target_tokens": 12}
    table = ("# SFT vs base on the test split\n"
             "\n"
             "| metric | base | sft | sft - base |\n"
             "|---|---|---|---|\n"
             "| loss | 2.0000 | 1.5000 | -0.5000 |\n"
             "| perplexity | 7.3891 | 4.4817 | -2.9074 |\n"
             "| rougeL | 0.1234 | 0.1235 | +0.0000 |\n"
             "| exact_match | 0.0000 | 0.5000 | +0.5000 |\n")
    assert deltas_markdown(base, sft, {}) == table
    cats = {"qa": {"rows": 3, "base": {"rougeL": 0.25, "exact_match": 0.0}, "sft": {"rougeL": 0.5, "exact_match": 1 / 3}},
            "zh": {"rows": 1, "base": {"rougeL": 1.0, "exact_match": 1.0}, "sft": {"rougeL": 0.0, "exact_match": 0.0}}}
    assert deltas_markdown(base, sft, cats) == table + (
        "\n"
        "## Per category (ROUGE-L / exact match)\n"
        "\n"
        "| category | rows | base rougeL | sft rougeL | base EM | sft EM |\n"
        "|---|---|---|---|---|---|\n"
        "| qa | 3 | 0.250 | 0.500 | 0.000 | 0.333 |\n"
        "| zh | 1 | 1.000 | 0.000 | 1.000 | 0.000 |\n")


def test_generation_reports_progress_per_batch(lm):
    model, tok = lm
    done = []

    class Progress:
        def update(self, n):
            done.append(n)

    out = generate(model, tok, ROWS, max_new_tokens=2, batch_size=5, progress=Progress())
    assert len(out) == len(ROWS) and done == [5, 5, len(ROWS) - 10]
