"""ROUGE-1/2/L F-measure with a tokenizer that also works for Chinese.

rouge-score's default tokenizer keeps only [a-z0-9] and so scores every Chinese
prediction 0. Here each CJK character is one token and other text is split into
lowercased alphanumeric words, so mixed English/Chinese text is scored fairly.
"""

import re

import datasets
import evaluate
from rouge_score import rouge_scorer

_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]|[^\W_]+", re.UNICODE)


class CjkAwareTokenizer:
    def tokenize(self, text):
        return _TOKEN.findall(text.lower())


class SftRouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE-1/2/L F1 with CJK characters as tokens (mean over rows).",
            citation="Lin, 2004. ROUGE: A Package for Automatic Evaluation of Summaries.",
            inputs_description="predictions: list of str; references: list of str",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, rouge_types=("rouge1", "rouge2", "rougeL")):
        scorer = rouge_scorer.RougeScorer(list(rouge_types), tokenizer=CjkAwareTokenizer())
        totals = {t: 0.0 for t in rouge_types}
        for pred, ref in zip(predictions, references):
            scores = scorer.score(ref, pred)
            for t in rouge_types:
                totals[t] += scores[t].fmeasure
        n = max(len(predictions), 1)
        return {t: totals[t] / n for t in rouge_types}
