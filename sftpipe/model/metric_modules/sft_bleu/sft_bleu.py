"""Corpus BLEU and chrF from sacrebleu, with Chinese-aware BLEU tokenization.

sacrebleu's "zh" tokenizer splits CJK characters and tokenizes the rest like
"13a", so it serves English, Chinese and mixed test sets alike. chrF works on
characters and needs no tokenizer.
"""

import datasets
import evaluate
import sacrebleu


class SftBleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus BLEU (sacrebleu, tokenize='zh') and chrF, both on a 0-100 scale.",
            citation="Post, 2018. A Call for Clarity in Reporting BLEU Scores. Popovic, 2015. chrF.",
            inputs_description="predictions: list of str; references: list of str (one reference each)",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, tokenize="zh"):
        refs = [list(references)]
        bleu = sacrebleu.corpus_bleu(list(predictions), refs, tokenize=tokenize)
        chrf = sacrebleu.corpus_chrf(list(predictions), refs)
        return {"bleu": bleu.score, "chrf": chrf.score}
