"""cleanlab label-noise detection on the generated sample, measured against the injected flips."""

import json

import numpy as np
import pytest

from sftpipe.collect import collect
from sftpipe.config import CollectParams, LabelNoiseParams, SampleParams, Source
from sftpipe.label_noise import label_noise_records, out_of_fold_probs, tfidf_features
from sftpipe.sample import SOURCES, generate
from sftpipe.schema import text_of


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    d = tmp_path_factory.mktemp("ln")
    generate(SampleParams(rows_per_lang=500, label_flip_rate=0.10, seed=5, exact_dup_rate=0, near_dup_rate=0,
                          garbage_rate=0), d)
    res = collect(CollectParams(sources=[Source(path=str(d / f), name=n) for n, f in SOURCES.items()]))
    truth = {json.loads(x)["id"]: json.loads(x) for x in (d / "truth.jsonl").read_text().splitlines()}
    return res.records, {i for i, t in truth.items() if t["defect"] == "label_flip"}


def f1(found, true):
    tp = len(found & true)
    p, r = tp / max(len(found), 1), tp / max(len(true), 1)
    return 2 * p * r / max(p + r, 1e-9)


def test_detects_flipped_labels_with_f1_above_0_7(flipped):
    records, flips = flipped
    res = label_noise_records(records, LabelNoiseParams())
    found = {d["id"] for d in res.dropped}
    assert f1(found, flips) >= 0.7
    assert len(res.kept) + len(res.dropped) == len(records)
    ev = res.dropped[0]["evidence"]
    assert ev["given_label"] != ev["predicted_label"] and 0 <= ev["label_quality"] <= 1


def test_probabilities_do_not_depend_on_blas_threads(flipped):
    """BLAS threading changes summation order, so the fit pins it: the core count changes no bit."""
    from threadpoolctl import threadpool_limits

    records, _ = flipped
    X = tfidf_features([text_of(r, "all") for r in records])
    classes = sorted({r["label"] for r in records})
    y = np.array([classes.index(r["label"]) for r in records])
    p = LabelNoiseParams()
    with threadpool_limits(2):
        two = out_of_fold_probs(X, y, p.folds, p.C, p.seed, p.tol)
    with threadpool_limits(1):
        one = out_of_fold_probs(X, y, p.folds, p.C, p.seed, p.tol)
    assert np.array_equal(two, one)


def test_flag_and_relabel_keep_every_row(flipped):
    records, flips = flipped
    flagged = label_noise_records(records, LabelNoiseParams(action="flag"))
    assert not flagged.dropped and len(flagged.kept) == len(records)
    marked = {r["id"] for r in flagged.kept if r["meta"].get("label_issue")}
    assert f1(marked, flips) >= 0.7
    relabeled = label_noise_records(records, LabelNoiseParams(action="relabel"))
    changed = [r for r in relabeled.kept if r["meta"].get("label_issue")]
    assert changed and all(r["label"] != r["meta"]["label_original"] for r in changed)


def test_no_label_field_passes_everything_through(flipped):
    records, _ = flipped
    unlabeled = [{**r, "label": None} for r in records[:50]]
    res = label_noise_records(unlabeled, LabelNoiseParams())
    assert len(res.kept) == 50 and not res.dropped and "no label field" in res.extra_metrics["skipped"]
