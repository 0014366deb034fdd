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
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import LabelNoiseParams
from .errors import UserError
from .io import iter_jsonl, write_json
from .ledger import FilterResult, IdTally, drop
from .schema import text_of
from .twopass import DROP, KEEP, chunks, route

log = logging.getLogger("sftpipe")


def tfidf_vectorizer():
    """The featurizer: TF-IDF of character 1-3-grams inside word boundaries (Chinese and English alike)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2, sublinear_tf=True,
                           max_features=200_000, dtype=np.float32)


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


EMBED_BATCH = 64     # texts per embedding batch (a batch pads to its longest text)


def embedding_features(texts: list[str], model_path: str, batch_size: int = EMBED_BATCH, embedder=None):
    """Mean-pooled last hidden states of a local encoder or decoder (no hub access needed); ``embedder``:
    :func:`load_embedder`'s (tokenizer, model), loaded from ``model_path`` when not given."""
    tok, model = embedder or load_embedder(model_path)
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
    from sklearn.model_selection import cross_val_predict
    from threadpoolctl import threadpool_limits

    clf, cv = _classifier_and_folds(folds, C, seed, tol)
    with threadpool_limits(1):
        return cross_val_predict(clf, X.astype(np.float64, copy=False), y, cv=cv, method="predict_proba")


def _classifier_and_folds(folds: int, C: float, seed: int, tol: float):
    """The logistic regression and the stratified folds every fit of the stage uses."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    return (LogisticRegression(C=C, tol=tol, max_iter=10_000),
            StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed))


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
    """What the stage decided, by row number: for each checked row (``rows``, ascending) whether it is an
    issue, its label quality and its predicted class (an index into ``classes``). Arrays, not a dict per
    row, so that ten million rows cost ~170 MB."""
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    issues: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    quality: np.ndarray = field(default_factory=lambda: np.zeros(0))
    predicted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    classes: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        self._pos = np.full(int(self.rows[-1]) + 1 if len(self.rows) else 0, -1, np.int64)   # row -> its index
        self._pos[self.rows] = np.arange(len(self.rows))

    def get(self, i: int) -> tuple[bool, float, str] | None:
        """(issue?, label quality, predicted class) of row i, None when it was not checked."""
        k = self._pos[i] if 0 <= i < len(self._pos) else -1
        if k < 0:
            return None
        return bool(self.issues[k]), float(self.quality[k]), self.classes[self.predicted[k]]


def fit_sample(y: np.ndarray, n_classes: int, noise_params: LabelNoiseParams) -> np.ndarray:
    """Positions (into the checked rows, ascending) the classifier is fitted on: all of them up to
    ``fit_rows``; else each class's share of ``fit_rows``, but at least ``2 x folds`` rows of a class
    (all of a smaller class), evenly spaced through that class's rows."""
    n = len(y)
    if n <= noise_params.fit_rows:
        return np.arange(n, dtype=np.int64)
    parts = []
    for c in range(n_classes):
        at = np.flatnonzero(y == c)
        quota = min(len(at), max(2 * noise_params.folds, round(noise_params.fit_rows * len(at) / n)))
        parts.append(at[np.unique(np.arange(quota, dtype=np.int64) * len(at) // quota)])
    return np.sort(np.concatenate(parts))


class _Featurizer:
    """TF-IDF fitted on the fit rows, or a local model's embeddings: ``fit_transform`` once, ``transform``
    for the other rows' chunks."""

    def __init__(self, noise_params: LabelNoiseParams):
        self.params = noise_params
        if noise_params.featurizer != "tfidf" and not noise_params.embedding_model:
            raise UserError("label_noise.featurizer is 'embeddings' but label_noise.embedding_model is not set")
        self.vectorizer = self.embedder = None

    def fit_transform(self, texts: list[str]):
        if self.params.featurizer == "tfidf":
            self.vectorizer = tfidf_vectorizer()
            return self.vectorizer.fit_transform(texts)
        return self.transform(texts)

    def transform(self, texts: list[str]):
        if self.vectorizer is not None:
            return self.vectorizer.transform(texts)
        self.embedder = self.embedder or load_embedder(self.params.embedding_model)   # loaded once
        return embedding_features(texts, self.params.embedding_model, embedder=self.embedder)


def sampled_probs(X, y: np.ndarray, folds: int, noise_params: LabelNoiseParams, rest) -> tuple[np.ndarray, np.ndarray]:
    """(out-of-fold probabilities of the fit rows, probabilities of the other rows): the same folds and
    fits as :func:`out_of_fold_probs`, and each other row scored by the mean of the ``folds`` fold models
    (none of which saw it). ``rest``: an iterable of feature matrices, the other rows in order."""
    from sklearn.base import clone
    from threadpoolctl import threadpool_limits

    clf, cv = _classifier_and_folds(folds, noise_params.C, noise_params.seed, noise_params.tol)
    X = X.astype(np.float64, copy=False)
    oof = np.zeros((len(y), int(y.max()) + 1))
    models = []
    with threadpool_limits(1):
        for train, test in cv.split(X, y):
            m = clone(clf).fit(X[train], y[train])
            oof[test] = m.predict_proba(X[test])
            models.append(m)
        others = [sum(m.predict_proba(Xc.astype(np.float64, copy=False)) for m in models) / len(models)
                  for Xc in rest]
    return oof, (np.concatenate(others) if others else np.zeros((0, oof.shape[1])))


def label_verdicts(labels: list, texts_of: Callable, noise_params: LabelNoiseParams,
                   chunk_rows: int = 50_000) -> Verdicts:
    """Check the rows whose class has at least ``min_class_size`` labelled rows; the rest pass untouched.
    ``labels``: each row's label (None: none); ``texts_of(rows, chunk)``: the featurized texts of the
    given rows (ascending row numbers), as lists of at most ``chunk`` texts in that order (asked only for
    the rows checked). Past ``fit_rows`` checked rows, the featurizer and the classifier are fitted on
    :func:`fit_sample` and the other rows scored by the fold models, ``chunk_rows`` at a time."""
    counts = Counter(lab for lab in labels if lab is not None)
    classes = sorted(c for c, n in counts.items() if n >= noise_params.min_class_size)
    index = {c: k for k, c in enumerate(classes)}
    checked = np.array([i for i, lab in enumerate(labels) if lab in index], dtype=np.int64)
    base = {"checked": len(checked), "classes": len(classes), "issues": 0}
    if not noise_params.enabled or len(classes) < 2:
        why = "disabled" if not noise_params.enabled else (
            "no label field in the data" if not counts
            else f"fewer than 2 classes with >= {noise_params.min_class_size} rows")
        log.info("label_noise: passing all %d rows through (%s)", len(labels), why)
        return Verdicts(metrics={**base, "checked": 0, "skipped": why})
    y = np.array([index[labels[i]] for i in checked], dtype=np.int64)
    folds = min(noise_params.folds, int(np.bincount(y).min()))
    fit = fit_sample(y, len(classes), noise_params)
    feat = _Featurizer(noise_params)
    texts = [t for part in texts_of(checked[fit], len(fit)) for t in part]
    X = feat.fit_transform(texts)
    del texts
    X = X.astype(np.float64)   # the fit's dtype (out_of_fold_probs), made here so the float32 copy is freed
    if len(fit) == len(checked):
        probs = out_of_fold_probs(X, y, folds, noise_params.C, noise_params.seed, noise_params.tol)
    else:
        rest = np.setdiff1d(np.arange(len(checked)), fit)
        # whole embedding batches, so that the batches (and their padding) are the same at any chunk size
        step = -(-chunk_rows // EMBED_BATCH) * EMBED_BATCH
        log.info("label_noise: fitting on %d of %d checked rows (label_noise.fit_rows), scoring the rest",
                 len(fit), len(checked))
        oof, others = sampled_probs(X, y[fit], folds, noise_params,
                                    (feat.transform(part) for part in texts_of(checked[rest], step)))
        probs = np.zeros((len(checked), len(classes)))
        probs[fit], probs[rest] = oof, others
    del X
    issues, quality = find_issues(y, probs, noise_params)
    predicted = probs.argmax(1)
    per_class = {c: {"rows": int(counts[c]), "issues": int(issues[y == index[c]].sum())} for c in classes}
    acc = float((predicted == y).mean())
    metrics = {**base, "issues": int(issues.sum()), "oof_accuracy": round(acc, 4), "folds": folds}
    if len(fit) < len(checked):
        metrics["fit_rows"] = len(fit)
    return Verdicts(checked, np.asarray(issues, bool), np.asarray(quality, np.float64), predicted, classes,
                    metrics, {"per_class": per_class})


def apply_verdict(i: int, rec: dict, verdicts: Verdicts, noise_params: LabelNoiseParams) -> tuple[str, dict]:
    """Row i as the stage writes it: (KEEP, record) with its label quality (and flag or new label),
    or (DROP, ledger row)."""
    rec = {**rec, "meta": dict(rec["meta"])}
    verdict = verdicts.get(i)
    if verdict is None:
        return KEEP, rec
    is_issue, q, pred = verdict
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
    def texts_of(rows, chunk):
        for at in range(0, len(rows), chunk):
            yield [text_of(records[i], noise_params.field) for i in rows[at:at + chunk]]

    verdicts = label_verdicts([r.get("label") for r in records], texts_of, noise_params)
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
    for chunk in chunks(inp_path, chunk_rows, ids):
        for rec in chunk:
            lab = rec.get("label")   # interned: ten million rows hold a pointer each, one string per label
            labels.append(sys.intern(lab) if isinstance(lab, str) else lab)

    def texts_of(rows, chunk):
        """The texts of ``rows`` (ascending), read back from the file in one pass, ``chunk`` at a time."""
        want, part = iter(rows.tolist()), []
        nxt = next(want, None)
        for i, rec in enumerate(iter_jsonl(inp_path)):
            if i == nxt:
                part.append(text_of(rec, noise_params.field))
                nxt = next(want, None)
                if len(part) == chunk:
                    yield part
                    part = []
                if nxt is None:
                    break
        if nxt is not None:
            raise UserError(f"label_noise: {inp_path} changed while the stage read it (row {nxt + 1} is gone)")
        if part:
            yield part

    verdicts = label_verdicts(labels, texts_of, noise_params, chunk_rows)
    del labels
    out = route("label_noise", inp_path, out_dir, ids, lambda i, rec: apply_verdict(i, rec, verdicts, noise_params))
    if verdicts.details:
        write_json(Path(out_dir) / "details.json", verdicts.details)
    m = out.counts(verdicts.metrics)
    write_json(metrics_path, m)
    return m, verdicts.details
