"""The evaluate metric modules shipped in the repo load by path, offline, and score Chinese."""

import pytest

from sftpipe.metric_modules import load


def test_rouge_scores_chinese_by_character():
    rouge = load("sft_rouge")
    out = rouge.compute(predictions=["红色的猫"], references=["红色的狗"])
    assert out["rouge1"] == pytest.approx(0.75) and out["rougeL"] == pytest.approx(0.75)
    assert rouge.compute(predictions=["完全不同"], references=["红色的狗"])["rouge1"] == 0


def test_rouge_english_and_identity():
    rouge = load("sft_rouge")
    assert rouge.compute(predictions=["The cat sat."], references=["the cat sat"])["rougeL"] == pytest.approx(1.0)


def test_bleu_chrf_and_exact_match():
    bleu = load("sft_bleu").compute(predictions=["德国的首都是柏林。", "blue door"],
                                    references=["德国的首都是柏林。", "blue door"])
    assert bleu["bleu"] == pytest.approx(100.0) and bleu["chrf"] == pytest.approx(100.0)
    em = load("sft_exact_match").compute(predictions=["Positive.", "负面", "red cat"],
                                         references=["positive", "正面", "red  cat"])
    assert em["exact_match"] == pytest.approx(2 / 3)
