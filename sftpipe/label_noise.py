"""Label-noise detection: out-of-fold class probabilities, then cleanlab's confident learning.

Features come from a param-selected featurizer: TF-IDF over character n-grams
(the default; works for English and Chinese without a tokenizer) or mean-pooled
embeddings from a local model. A logistic regression gives out-of-fold predicted
probabilities under stratified K-fold; ``cleanlab.filter.find_label_issues``
marks the rows whose given label disagrees with them. The action is a param:
drop the row, flag it in ``meta``, or relabel it with the predicted class.

The stage reads its file twice (:func:`label_noise_jsonl`): each row's label and text, then the
records again as decided; :func:`label_noise_records` is the same on a list.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import LabelNoiseParams
from .errors import UserError
from .io import write_json
from .ledger import FilterResult, IdTally, drop
from .schema import text_of
from .twopass import DROP, KEEP, chunks, route

log = logging.getLogger("sftpipe")


def tfidf_vectorizer():
    """The featurizer: TF-IDF of character 1-3-grams inside word boundaries (Chinese and English alike)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2, sublinear_tf=True,
                           max_features=200_000, dtype=np.float32)


def tfidf_features(texts: list[str]):
    return tfidf_vectorizer().fit_transform(texts)


def load_embedder(model_path: str):
    """(tokenizer, model) of a local encoder or decoder, in eval mode, for :func:`embed_batch`."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_path)
        model = AutoModel.from_pretrained(model_path, use_safetensors=True).eval()
    except (OSError, ValueError) as e:
        raise UserError(f"label_noise.embedding_model: cannot load {model_path}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok, model


def embed_batch(tok, model, texts: list[str]) -> np.ndarray:
    """Mean-pooled, L2-normalized last hidden states of one batch (padded to its longest text): the unit
    of work wherever it runs (here, or a Ray actor), so a batch embeds to the same floats."""
    import torch

    with torch.inference_mode():
        enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(emb, dim=-1).float().numpy()


def embedding_batches(n: int, batch_size: int) -> list[range]:
    """The batches :func:`embedding_features` cuts ``n`` texts into: consecutive, in input order (no sorting)."""
    return [range(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def embedding_features(texts: list[str], model_path: str, batch_size: int = 64):
    """Mean-pooled last hidden states of a local encoder or decoder (no hub access needed)."""
    tok, model = load_embedder(model_path)
    return np.concatenate([embed_batch(tok, model, [texts[i] for i in b]) for b in embedding_batches(len(texts),
                                                                                                   batch_size)])


def out_of_fold_probs(X, y: np.ndarray, folds: int, C: float, seed: int, tol: float) -> np.ndarray:
    """Out-of-fold class probabilities that depend on the data, not on the machine.

    Which rows cleanlab flags turns on small probability differences, and L-BFGS amplifies rounding
    differences whenever they change a line-search step. So the fit runs in float64 (in float32, 2 to 4
    of ~220 flagged rows changed between AVX2 and AVX-512 BLAS kernels) and BLAS on one thread: its
    thread count changes summation order, and on these small matrices one thread was 2x faster too.
    A tighter ``tol`` gets closer to the optimum but lets the two kernel families part ways in the last
    iterations (bench/cross_cpu.py).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    clf = LogisticRegression(C=C, tol=tol, max_iter=10_000)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with threadpool_limits(1):
        return cross_val_predict(clf, X.astype(np.float64, copy=False), y, cv=cv, method="predict_proba")


def find_issues(labels: np.ndarray, probs: np.ndarray, noise_params: LabelNoiseParams) -> tuple[np.ndarray, np.ndarray]:
    """(boolean issue mask, label quality score per row) from cleanlab."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    # n_jobs=1: the same mask (cleanlab: n_jobs changes only the time), and no process pool, whose workers on
    # Linux read the classes' probabilities from module globals and fail with a NameError when this process
    # was itself started by spawn (a ProcessPoolExecutor or multiprocessing child)
    mask = find_label_issues(labels, probs, filter_by=noise_params.filter_by, frac_noise=noise_params.frac_noise,
                             n_jobs=1)
    return np.asarray(mask, dtype=bool), get_label_quality_scores(labels, probs)


@dataclass
class Verdicts:
    """What the stage decided, by row number: (issue?, label quality, predicted class) for each checked row."""
    info: dict[int, tuple[bool, float, str]]
    metrics: dict
    details: dict = field(default_factory=dict)


def label_verdicts(labels: list, text_at: Callable[[int], str], noise_params: LabelNoiseParams) -> Verdicts:
    """Check the rows whose class has at least ``min_class_size`` labelled rows; the rest pass untouched.
    ``labels``: each row's label (None: none); ``text_at(i)``: row i's featurized text (asked only for
    the rows checked)."""
    counts = Counter(lab for lab in labels if lab is not None)
    classes = sorted(c for c, n in counts.items() if n >= noise_params.min_class_size)
    checked = [i for i, lab in enumerate(labels) if lab in classes]
    base = {"checked": len(checked), "classes": len(classes), "issues": 0}
    if not noise_params.enabled or len(classes) < 2:
        why = "disabled" if not noise_params.enabled else (
            "no label field in the data" if not counts
            else f"fewer than 2 classes with >= {noise_params.min_class_size} rows")
        log.info("label_noise: passing all %d rows through (%s)", len(labels), why)
        return Verdicts({}, {**base, "checked": 0, "skipped": why})
    index = {c: k for k, c in enumerate(classes)}
    y = np.array([index[labels[i]] for i in checked])
    folds = min(noise_params.folds, int(np.bincount(y).min()))
    texts = [text_at(i) for i in checked]
    if noise_params.featurizer == "tfidf":
        X = tfidf_features(texts)
    else:
        if not noise_params.embedding_model:
            raise UserError("label_noise.featurizer is 'embeddings' but label_noise.embedding_model is not set")
        X = embedding_features(texts, noise_params.embedding_model)
    del texts
    X = X.astype(np.float64)   # the fit's dtype (out_of_fold_probs), made here so the float32 copy is freed
    probs = out_of_fold_probs(X, y, folds, noise_params.C, noise_params.seed, noise_params.tol)
    issues, quality = find_issues(y, probs, noise_params)
    predicted = probs.argmax(1)
    info = {i: (bool(issues[k]), float(quality[k]), classes[predicted[k]]) for k, i in enumerate(checked)}
    per_class = {c: {"rows": int(counts[c]), "issues": int(sum(issues[y == index[c]]))} for c in classes}
    acc = float((predicted == y).mean())
    return Verdicts(info, {**base, "issues": int(issues.sum()), "oof_accuracy": round(acc, 4), "folds": folds},
                    {"per_class": per_class})


def apply_verdict(i: int, rec: dict, verdicts: Verdicts, noise_params: LabelNoiseParams) -> tuple[str, dict]:
    """Row i as the stage writes it: (KEEP, record) with its label quality (and flag or new label),
    or (DROP, ledger row)."""
    rec = {**rec, "meta": dict(rec["meta"])}
    if i not in verdicts.info:
        return KEEP, rec
    is_issue, q, pred = verdicts.info[i]
    rec["meta"]["label_quality"] = round(q, 4)
    if not is_issue:
        return KEEP, rec
    if noise_params.action == "drop":
        return DROP, drop(rec, "label_noise", "label_issue", given_label=rec["label"], predicted_label=pred,
                          label_quality=round(q, 4), filter_by=noise_params.filter_by,
                          frac_noise=noise_params.frac_noise)
    if noise_params.action == "flag":
        rec["meta"].update(label_issue=True, label_predicted=pred)
    else:  # relabel
        rec["meta"].update(label_issue=True, label_original=rec["label"])
        rec["label"] = pred
    return KEEP, rec


def label_noise_records(records: list[dict], noise_params: LabelNoiseParams) -> FilterResult:
    """The stage on rows in memory (:func:`label_noise_jsonl` streams a file to the same bytes)."""
    verdicts = label_verdicts([r.get("label") for r in records],
                              lambda i: text_of(records[i], noise_params.field), noise_params)
    kept, dropped = [], []
    for i, rec in enumerate(records):
        kind, row = apply_verdict(i, rec, verdicts, noise_params)
        (kept if kind == KEEP else dropped).append(row)
    return FilterResult(kept, dropped, verdicts.metrics, verdicts.details)


def label_noise_jsonl(inp_path, out_dir, metrics_path, noise_params: LabelNoiseParams,
                      chunk_rows: int = 10_000) -> tuple[dict, dict]:
    """The stage from a JSONL file, in two passes: each row's label and featurized text first (the
    only things held for every row), then the records again, written as decided. Returns (metrics,
    details), with the bytes :func:`label_noise_records` + ``write_filter_outputs`` write."""
    ids = IdTally()
    labels: list = []
    texts: dict[int, str] = {}
    for chunk in chunks(inp_path, chunk_rows, ids):
        for rec in chunk:
            lab = rec.get("label")
            if lab is not None:
                texts[len(labels)] = text_of(rec, noise_params.field)
            labels.append(lab)
    verdicts = label_verdicts(labels, texts.__getitem__, noise_params)
    del texts
    out = route("label_noise", inp_path, out_dir, ids, lambda i, rec: apply_verdict(i, rec, verdicts, noise_params))
    if verdicts.details:
        write_json(Path(out_dir) / "details.json", verdicts.details)
    m = out.counts(verdicts.metrics)
    write_json(metrics_path, m)
    return m, verdicts.details
