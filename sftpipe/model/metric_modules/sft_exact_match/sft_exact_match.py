"""Exact match after light normalization (NFKC, case, whitespace, trailing punctuation)."""

import re
import unicodedata

import datasets
import evaluate

_TRAIL = re.compile(r"[\s.!?。！？,，;；:：]+$")


def normalize(text):
    text = unicodedata.normalize("NFKC", text).lower().strip()
    text = re.sub(r"\s+", " ", text)
    return _TRAIL.sub("", text)


class SftExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of predictions equal to the reference after normalization.",
            citation="",
            inputs_description="predictions: list of str; references: list of str",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references):
        hits = [normalize(p) == normalize(r) for p, r in zip(predictions, references)]
        return {"exact_match": sum(hits) / max(len(hits), 1)}
