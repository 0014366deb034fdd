"""The evaluate metric modules shipped in the repo load by path, offline, and score Chinese.

Expected values on non-identical pairs are worked out by hand (or, for chrF, with sacrebleu
directly), so a wrong tokenizer or normalization shows up as a wrong number."""

import pytest
import sacrebleu

from sftpipe.model.metric_modules import load


@pytest.fixture(scope="module")
def rouge():
    return load("sft_rouge")


@pytest.fixture(scope="module")
def bleu():
    return load("sft_bleu")


@pytest.fixture(scope="module")
def exact_match():
    return load("sft_exact_match")


def test_rouge_scores_chinese_by_character(rouge):
    out = rouge.compute(predictions=["红色的猫"], references=["红色的狗"])
    assert out["rouge1"] == pytest.approx(0.75) and out["rougeL"] == pytest.approx(0.75)
    assert rouge.compute(predictions=["完全不同"], references=["红色的狗"])["rouge1"] == 0


def test_rouge_english_and_identity(rouge):
    assert rouge.compute(predictions=["The cat sat."], references=["the cat sat"])["rougeL"] == pytest.approx(1.0)


def test_rouge_mixed_english_and_chinese_by_hand(rouge):
    # prediction tokens: the red cat 睡 觉 了 (6); reference: the cat 睡 了 (4)
    out = rouge.compute(predictions=["The red cat 睡觉了"], references=["the cat 睡了"])
    # rouge1: 4 shared unigrams, P = 4/6, R = 4/4 -> F = 0.8; rougeL: LCS "the cat 睡 了" = 4 -> 0.8
    assert out["rouge1"] == pytest.approx(0.8) and out["rougeL"] == pytest.approx(0.8)
    # rouge2: only "cat 睡" is shared, P = 1/5, R = 1/3 -> F = 0.25
    assert out["rouge2"] == pytest.approx(0.25)


def test_rouge_types_differ_on_word_order_and_average_over_rows(rouge):
    # same words, other order: every unigram matches, no bigram does, the LCS is 2 of 3
    out = rouge.compute(predictions=["b a c"], references=["a b c"])
    assert out == pytest.approx({"rouge1": 1.0, "rouge2": 0.0, "rougeL": 2 / 3})
    two = rouge.compute(predictions=["b a c", "红色的猫"], references=["a b c", "红色的狗"])
    assert two["rouge1"] == pytest.approx((1.0 + 0.75) / 2) and two["rougeL"] == pytest.approx((2 / 3 + 0.75) / 2)


def test_rouge_lowercases_without_merging_letters_that_only_uppercase_alike(rouge):
    # Turkish "kır" (countryside) and "kir" (dirt) are different words that both upper-case to "KIR";
    # lowercasing folds the case of "Kır Evi" and keeps them apart. Tokens: kır evi / kir evi, so one
    # unigram of two is shared (P = R = 1/2), no bigram, and the LCS is 1 of 2.
    out = rouge.compute(predictions=["Kır Evi"], references=["kir evi"])
    assert out == pytest.approx({"rouge1": 0.5, "rouge2": 0.0, "rougeL": 0.5})
    assert rouge.compute(predictions=["KIR EVI"], references=["kir evi"])["rouge2"] == pytest.approx(1.0)


def test_bleu_and_chrf_on_identical_text(bleu):
    out = bleu.compute(predictions=["德国的首都是柏林。", "blue door"], references=["德国的首都是柏林。", "blue door"])
    assert out["bleu"] == pytest.approx(100.0) and out["chrf"] == pytest.approx(100.0)


def test_bleu_tokenizes_chinese_by_character(bleu):
    """Worked by hand: 7 characters each, one differs at the end, so the matched 1..4-gram shares are
    6/7, 5/6, 4/5, 3/4 and BLEU = 100 * (3/7) ** (1/4). Under '13a' the sentence is one token: 0."""
    out = bleu.compute(predictions=["我喜欢红色的猫"], references=["我喜欢红色的狗"])
    assert out["bleu"] == pytest.approx(100 * (3 / 7) ** 0.25)
    assert sacrebleu.corpus_bleu(["我喜欢红色的猫"], [["我喜欢红色的狗"]], tokenize="13a").score == 0


def test_bleu_english_and_corpus_pooling_by_hand(bleu):
    # "the cat sat on the mat" vs "the cat sat on a mat": 5/6, 3/5, 2/4, 1/3 -> 100 * (1/12) ** (1/4)
    en = bleu.compute(predictions=["the cat sat on the mat"], references=["the cat sat on a mat"])
    assert en["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)
    # corpus BLEU pools the n-gram counts of both rows (it is not the mean of the two scores):
    # (6+5)/(7+6), (5+3)/(6+5), (4+2)/(5+4), (3+1)/(4+3)
    preds, refs = ["我喜欢红色的猫", "the cat sat on the mat"], ["我喜欢红色的狗", "the cat sat on a mat"]
    both = bleu.compute(predictions=preds, references=refs)
    assert both["bleu"] == pytest.approx(100 * (11 / 13 * 8 / 11 * 6 / 9 * 4 / 7) ** 0.25)
    assert both["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score)
    assert 0 < both["chrf"] < 100


@pytest.mark.parametrize("prediction,reference,match", [
    ("Positive.", "positive", True),           # case and a trailing full stop
    ("red\t cat\n", "red  cat", True),         # runs of whitespace are one space; ends are trimmed
    ("ＡＢＣ１", "abc1", True),                   # NFKC: full-width letters and digits
    ("ﬁne", "fine", True),                     # NFKC: the ligature
    ("正面。", "正面", True),                      # Chinese trailing punctuation
    ("yes ?!", "yes", True),                   # several trailing marks and the space before them
    ("负面", "正面", False),
    ("redcat", "red cat", False),              # whitespace between words still separates them
    ("3.5", "35", False),                      # punctuation inside the text counts
    ("a,b", "ab", False),
    ("3.5.", "3.5", True),                     # only the trailing mark goes
    ("...yes", "yes", False),                  # leading punctuation is kept
    ("it's", "its", False),
    ("KIR", "kir", True),                      # ASCII I lowercases to i
    ("Kır", "kir", False),                     # dotless ı is another letter, though both upper-case to I
])
def test_exact_match_normalization(exact_match, prediction, reference, match):
    out = exact_match.compute(predictions=[prediction], references=[reference])
    assert out["exact_match"] == (1.0 if match else 0.0)


def test_exact_match_is_the_share_of_rows(exact_match):
    em = exact_match.compute(predictions=["Positive.", "负面", "red cat"], references=["positive", "正面", "red  cat"])
    assert em["exact_match"] == pytest.approx(2 / 3)
