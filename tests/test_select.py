"""The select stage's logic: scores, bounds, quotas by weights/balance, the ledger, the report."""

import json

import numpy as np
import pytest

from sftpipe.config import SelectParams
from sftpipe.errors import UserError
from sftpipe.ledger import check_accounting
from sftpipe.select.choose import choose
from sftpipe.select.report import coverage, distributions, nearest_similarity, spread
from sftpipe.select.scores import gather, group_of, order_score, out_of_bounds, percentile_ranks


def rec(i, prompt, reply, label="qa", source="s", lang="en", **meta):
    return {"id": f"{source}:{i}", "source": source, "label": label, "meta": {"lang": lang, **meta},
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]}


def pool(n=60, seed=0):
    rng = np.random.default_rng(seed)
    cats = ["math", "capital", "translate"]
    return [rec(i, f"question {i} about {cats[i % 3]}", f"answer {i} " * int(rng.integers(1, 20)),
                label=cats[i % 3], source="a" if i < n // 2 else "b", lang="en" if i % 2 else "zh",
                ifd=float(rng.uniform(0.2, 1.3)), ppl=float(rng.uniform(1, 50)))
            for i in range(n)]


def accounted(records, res):
    check_accounting("select", [r["id"] for r in records], [r["id"] for r in res.kept],
                     [d["id"] for d in res.dropped])


def test_percentile_ranks_ties_missing_and_order():
    r = percentile_ranks([3.0, None, 1.0, 3.0, 2.0])
    assert r.tolist() == [pytest.approx(5 / 6), 0.5, 0.0, pytest.approx(5 / 6), pytest.approx(1 / 3)]
    assert percentile_ranks([None, 7.0]).tolist() == [0.5, 0.5]
    s = [{"ifd": 0.9, "length": 10}, {"ifd": 0.1, "length": 300}, {"ifd": 0.5, "length": 20}]
    assert np.argsort(-order_score(s, {"ifd": -1.0})).tolist() == [1, 2, 0]
    assert np.argsort(-order_score(s, {"ifd": -1.0, "length": 3.0})).tolist() == [1, 2, 0]
    assert np.argsort(-order_score(s, {"length": 1.0})).tolist() == [1, 2, 0]
    assert np.argsort(-order_score(s, {"ifd": 1.0})).tolist() == [0, 2, 1]


def test_unknown_or_absent_scores_are_one_line_errors():
    with pytest.raises(UserError, match="unknown score"):
        order_score([{"ifd": 1.0}], {"ifdd": 1.0})
    with pytest.raises(UserError, match="no row has a 'judge' score .*judge.enabled"):
        order_score([{"ifd": 1.0}], {"judge": 1.0})


def test_gather_reads_meta_cheap_signals_and_extra():
    r = rec(1, "q", "four", ifd=0.5, ppl=3.0, scores={"reward": 0.2})
    g = gather(r, {"judge": 0.7, "_judge_error": {"error": "x"}})
    assert g == {"ifd": 0.5, "ppl": 3.0, "reward": 0.2, "judge": 0.7, "length": 4, "turns": 1,
                 "lang": "en", "category": "qa"}


def test_bounds_and_groups():
    assert out_of_bounds({"ifd": 1.2}, {}, {"ifd": 1.0}) == {"reason": "above_score", "score": "ifd",
                                                              "value": 1.2, "bound": 1.0}
    assert out_of_bounds({"judge": 0.2}, {"judge": 0.5}, {}) == {"reason": "below_score", "score": "judge",
                                                                 "value": 0.2, "bound": 0.5}
    assert out_of_bounds({"ifd": 0.5}, {"judge": 0.5}, {"ifd": 1.0}) is None      # no judge score: no bound
    r = rec(1, "q", "a", label="math", source="b", lang="zh")
    assert group_of(r, {"math": 0.5}, "none") == "math"
    assert group_of(r, {"b": 0.5}, "lang") == "b"
    assert group_of(r, {}, "lang") == "lang=zh" and group_of(r, {}, "none") == "*"


@pytest.mark.parametrize("method", ["random", "top", "diverse", "kcenter"])
def test_every_method_accounts_for_every_row_and_meets_the_budget(method):
    records = pool()
    res = choose(records, SelectParams(method=method, budget=20, threshold=0.99))
    accounted(records, res)
    assert len(res.kept) == 20 and res.extra_metrics["selected"] == 20
    assert sorted(r["meta"]["select_rank"] for r in res.kept) == list(range(20))
    ids = [r["id"] for r in records]
    assert [r["id"] for r in res.kept] == sorted((r["id"] for r in res.kept), key=ids.index)  # input order
    assert {d["reason"] for d in res.dropped} <= {"budget", "too_similar", "quota"}
    assert all("scores" in r["meta"] and "ifd" in r["meta"]["scores"] for r in res.kept)
    again = choose(records, SelectParams(method=method, budget=20, threshold=0.99))
    assert json.dumps(again.kept) == json.dumps(res.kept) and json.dumps(again.dropped) == json.dumps(res.dropped)


def test_top_takes_the_lowest_ifd_and_fraction_budget():
    records = pool()
    res = choose(records, SelectParams(method="top", budget=0.25, scores={"ifd": -1.0}))
    assert len(res.kept) == 15
    best = sorted(records, key=lambda r: r["meta"]["ifd"])[:15]
    assert {r["id"] for r in res.kept} == {r["id"] for r in best}
    worst_kept = max(r["meta"]["ifd"] for r in res.kept)
    assert all(d["record"]["meta"]["ifd"] >= worst_kept for d in res.dropped)
    assert all("order_score" in d["evidence"] for d in res.dropped)


def test_random_differs_by_seed():
    records = pool()
    a = {r["id"] for r in choose(records, SelectParams(method="random", budget=20, seed=0)).kept}
    b = {r["id"] for r in choose(records, SelectParams(method="random", budget=20, seed=1)).kept}
    assert a != b


def test_bounds_drop_before_the_budget_with_evidence():
    records = pool()
    res = choose(records, SelectParams(method="top", budget=50, max={"ifd": 1.0}))
    accounted(records, res)
    above = [d for d in res.dropped if d["reason"] == "above_score"]
    assert {d["id"] for d in above} == {r["id"] for r in records if r["meta"]["ifd"] > 1.0}
    assert all(d["evidence"]["score"] == "ifd" and d["evidence"]["value"] > 1.0 for d in above)
    assert len(res.kept) == min(50, len(records) - len(above))


def test_weights_and_balance_set_the_mixture():
    records = pool(90)
    res = choose(records, SelectParams(method="random", budget=30, weights={"math": 0.5}))
    labels = [r["label"] for r in res.kept]
    assert labels.count("math") == 15
    assert res.details["quotas"] == {"math": 15, "*": 15}
    uneven = records[:80]   # source a: 45 rows, b: 35 rows
    res = choose(uneven, SelectParams(method="random", budget=40, balance="source"))
    assert sorted(r["source"] for r in res.kept).count("a") == 20
    assert res.details["quotas"] == {"source=a": 20, "source=b": 20}
    few = records[:50]      # a: 45, b: 5 -> b gives all it has, a takes the rest
    res = choose(few, SelectParams(method="top", budget=30, balance="source"))
    assert res.details["quotas"] == {"source=a": 25, "source=b": 5}
    assert res.details["groups_selected"] == {"source=a": 25, "source=b": 5}
    assert choose(uneven, SelectParams(method="random", budget=40)).details["quotas"] == {"*": 40}
    with pytest.raises(UserError, match=r"select.weights: \['maths'\]"):
        choose(records, SelectParams(method="random", budget=30, weights={"maths": 0.5}))


def test_stratify_keeps_the_pool_mix_and_ranks_within_each_category():
    # math rows have low ifd, translate rows high: plain top takes math only, stratified top keeps
    # each label's share of the pool and the lowest-ifd rows of each label
    records = [rec(i, f"q{i}", f"a{i}", label=lab, ifd=base + i / 1000)
               for i, (lab, base) in enumerate([("math", 0.1)] * 40 + [("translate", 0.9)] * 20)]
    plain = choose(records, SelectParams(method="top", budget=15))
    assert {r["label"] for r in plain.kept} == {"math"}
    res = choose(records, SelectParams(method="top", budget=15, stratify="label"))
    accounted(records, res)
    assert res.details["quotas"] == {"label=math": 10, "label=translate": 5}
    for lab, n in (("math", 10), ("translate", 5)):
        group = [r for r in records if r["label"] == lab]
        best = sorted(group, key=lambda r: r["meta"]["ifd"])[:n]
        assert {r["id"] for r in res.kept if r["label"] == lab} == {r["id"] for r in best}
    reasons = {(d["record"]["label"], d["reason"]) for d in res.dropped}
    assert ("math", "quota") in reasons and len(res.dropped) == 45
    with pytest.raises(ValueError, match="balance .* and stratify .* both set"):
        SelectParams(method="top", budget=15, stratify="label", balance="label")


def test_diverse_rejects_copies_with_the_nearest_admitted_row():
    records = pool(30)
    copies = [{**r, "id": r["id"] + "c"} for r in records[:10]]
    for c in copies:
        c["meta"] = {**c["meta"], "ifd": 5.0}    # worst score: walked after its original
    res = choose(records + copies, SelectParams(method="diverse", budget=40, threshold=0.95))
    sim = {d["id"]: d for d in res.dropped if d["reason"] == "too_similar"}
    for c in copies:
        assert c["id"] in sim and sim[c["id"]]["evidence"]["similarity"] >= 0.95
    assert res.extra_metrics["short_of_budget"] > 0


def test_without_scores_the_walk_is_random_s_own_so_diverse_is_random_minus_near_duplicates():
    """select.scores: {} walks in the seeded order random uses (it was the file's order): top is random
    selection, and diverse takes random's rows except those too similar to one taken before them."""
    records = pool(60)
    copies = [{**r, "id": r["id"] + "c"} for r in records[:20]]
    rows = records + copies
    for seed in (0, 1):
        rand = [r["id"] for r in choose(rows, SelectParams(method="random", budget=25, seed=seed)).kept]
        top = choose(rows, SelectParams(method="top", budget=25, seed=seed, scores={}))
        assert [r["id"] for r in top.kept] == rand
        assert all("score" not in d["evidence"] and "order_score" not in d["evidence"] for d in top.dropped)
        div = choose(rows, SelectParams(method="diverse", budget=25, seed=seed, scores={}, threshold=0.95))
        accounted(rows, div)
        kept = {r["id"] for r in div.kept}
        assert len(kept) == 25 and not any(r["id"] in kept and r["id"] + "c" in kept for r in records)
        similar = [d for d in div.dropped if d["reason"] == "too_similar"]
        assert similar and all(d["evidence"]["similarity"] >= 0.95 for d in similar)
    a, b = ({r["id"] for r in choose(rows, SelectParams(method="diverse", budget=25, seed=s, scores={})).kept}
            for s in (0, 1))
    assert a != b


def test_all_passes_through_and_refuses_a_budget():
    records = pool(10)
    res = choose(records, SelectParams())
    assert [r["id"] for r in res.kept] == [r["id"] for r in records] and not res.dropped
    with pytest.raises(UserError, match="budget is set but select.method is 'all'"):
        choose(records, SelectParams(budget=5))
    with pytest.raises(Exception, match="neither a whole number"):
        SelectParams(budget=2.5)


def test_distributions_and_coverage():
    records = pool(12)
    rows = distributions(records, records[:4])
    cat = {v: (b, a) for d, v, b, a in rows if d == "category"}
    assert cat == {"capital": (4, 1), "math": (4, 2), "translate": (4, 1)}
    assert sum(b for d, _, b, _ in rows if d == "length") == 12
    X = np.eye(4, dtype=np.float32)[[0, 0, 1, 2, 3, 3]]
    assert nearest_similarity(X, np.array([0, 2])).tolist() == [1, 1, 1, 0, 0, 0]
    cov = coverage(X, np.array([0, 2, 3, 4]), seed=0)
    assert cov["covered_at_0.8"] == 1.0 and cov["mean_nearest_similarity"] == 1.0
    assert spread(X, np.array([0, 1]), 0) == 1.0 and spread(X, np.array([0, 2]), 0) == 0.0


def run_select_stage(tmp_path, rows, select: dict):
    """The select stage as `dvc repro` runs it, in-process; returns (click result, out dir)."""
    import logging

    import yaml
    from click.testing import CliRunner

    from sftpipe.io import write_jsonl
    from stages.select import cli

    inp, out = tmp_path / "train.jsonl", tmp_path / "select"
    write_jsonl(inp, rows)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"collect": {"sources": [{"path": "unused.jsonl"}]}, "select": select}))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = CliRunner().invoke(cli, ["--params", str(params), "--inp", str(inp), "--out", str(out),
                                          "--metrics", str(tmp_path / "select.json"),
                                          "--plot", str(tmp_path / "dist.csv"), "--picture", str(tmp_path / "s.png")])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return result, out


def test_select_stage_writes_the_choice_the_ledger_and_the_report(tmp_path, monkeypatch):
    from sftpipe.io import read_jsonl

    monkeypatch.delenv("SFTPIPE_DEBUG", raising=False)
    rows = pool(80)
    result, out = run_select_stage(tmp_path, rows, {"method": "diverse", "budget": 30, "max": {"ifd": 1.2}})
    assert result.exit_code == 0, result.output
    kept, dropped = read_jsonl(out / "train.jsonl"), read_jsonl(out / "dropped.jsonl")
    accounted(rows, type("R", (), {"kept": kept, "dropped": dropped}))
    m = json.loads((tmp_path / "select.json").read_text())
    assert m["kept"] == len(kept) == 30 and m["rows_in"] == 80 and m["method"] == "diverse"
    assert 0 < m["coverage_covered_at_0.8"] <= 1 and m["coverage_spread_selected"] is not None
    csv_rows = (tmp_path / "dist.csv").read_text().splitlines()
    assert csv_rows[0] == "dimension,value,before,after" and any(r.startswith("category,math,") for r in csv_rows)
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    first = (out / "train.jsonl").read_bytes()
    result, _ = run_select_stage(tmp_path, rows, {"method": "diverse", "budget": 30, "max": {"ifd": 1.2}})
    assert (out / "train.jsonl").read_bytes() == first              # byte-identical rerun
    result, _ = run_select_stage(tmp_path, rows, {"method": "top", "budget": 30, "scores": {"judge": 1.0}})
    assert result.exit_code != 0 and result.output.count("\n") == 1 and "judge.enabled" in result.output
