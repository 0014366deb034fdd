import json

import pytest

from sftpipe.errors import AccountingError
from sftpipe.ledger import FilterResult, check_accounting, drop, write_filter_outputs


def r(i):
    return {"id": f"s:{i}", "messages": [], "source": "s", "label": None, "meta": {}}


def test_accounting_passes_when_every_id_lands_once():
    check_accounting("x", ["a", "b", "c"], ["a", "c"], ["b"])


@pytest.mark.parametrize("kept,dropped,match", [
    (["a"], ["b"], r"lost ids \['c'\]"),
    (["a", "b", "c"], ["c"], r"unexpected/duplicated ids \['c'\]"),
    (["a", "b", "z"], [], r"lost ids \['c'\].*unexpected/duplicated ids \['z'\]"),
])
def test_accounting_fails_loudly(kept, dropped, match):
    with pytest.raises(AccountingError, match=match):
        check_accounting("x", ["a", "b", "c"], kept, dropped)


def test_write_filter_outputs_refuses_to_write_bad_arithmetic(tmp_path):
    rows = [r(1), r(2)]
    with pytest.raises(AccountingError):
        write_filter_outputs("x", rows, FilterResult(kept=[rows[0]]), tmp_path / "out", tmp_path / "m.json")
    assert not (tmp_path / "out").exists()


def test_write_filter_outputs_writes_ledger_and_counts(tmp_path):
    rows = [r(1), r(2), r(3)]
    res = FilterResult(kept=[rows[0]], dropped=[drop(rows[1], "x", "a", score=1), drop(rows[2], "x", "b")])
    m = write_filter_outputs("x", rows, res, tmp_path / "out", tmp_path / "m.json")
    assert m == {"rows_in": 3, "kept": 1, "dropped": 2, "dropped_by_reason": {"a": 1, "b": 1}}
    ledger = [json.loads(x) for x in (tmp_path / "out" / "dropped.jsonl").read_text().splitlines()]
    assert ledger[0]["evidence"] == {"score": 1} and ledger[0]["record"] == rows[1]


def test_accounting_error_names_the_stage_and_at_most_five_ids_of_each_kind():
    inp = [f"i{k}" for k in range(7)]
    with pytest.raises(AccountingError) as err:
        check_accounting("dedup", inp, [], [f"z{k}" for k in range(7)])
    assert str(err.value) == ("dedup: kept (0) + dropped (7) != input (7); "
                              "lost ids ['i0', 'i1', 'i2', 'i3', 'i4']..., "
                              "unexpected/duplicated ids ['z0', 'z1', 'z2', 'z3', 'z4']...")
    # six: five shown, then the ellipsis
    with pytest.raises(AccountingError) as err:
        check_accounting("dedup", inp[:6], [], [f"z{k}" for k in range(6)])
    assert "lost ids ['i0', 'i1', 'i2', 'i3', 'i4']..., " in str(err.value)
    assert str(err.value).endswith("unexpected/duplicated ids ['z0', 'z1', 'z2', 'z3', 'z4']...")
    # exactly five of each: all of them shown, no ellipsis
    with pytest.raises(AccountingError) as err:
        check_accounting("split", inp[:5], ["a", "b", "c"], ["d", "e"])
    assert str(err.value) == ("split: kept (3) + dropped (2) != input (5); "
                              "lost ids ['i0', 'i1', 'i2', 'i3', 'i4'], "
                              "unexpected/duplicated ids ['a', 'b', 'c', 'd', 'e']")


def test_write_filter_outputs_error_names_the_stage(tmp_path):
    rows = [r(1), r(2)]
    with pytest.raises(AccountingError, match=r"^perplexity: kept \(1\) \+ dropped \(0\) != input \(2\); "):
        write_filter_outputs("perplexity", rows, FilterResult(kept=[rows[0]]), tmp_path / "out", tmp_path / "m.json")


def test_write_filter_outputs_writes_kept_details_and_the_metrics_file(tmp_path):
    rows = [r(1), r(2), r(3)]
    res = FilterResult(kept=[rows[0], rows[2]], dropped=[drop(rows[1], "x", "a")], extra_metrics={"groups": 2},
                       details={"bounds": {"all": {"lower": 1.5}}})
    m = write_filter_outputs("x", rows, res, tmp_path / "out", tmp_path / "metrics" / "x.json")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["details.json", "dropped.jsonl", "kept.jsonl"]
    assert [json.loads(x) for x in (out / "kept.jsonl").read_text().splitlines()] == [rows[0], rows[2]]
    assert json.loads((out / "details.json").read_text()) == {"bounds": {"all": {"lower": 1.5}}}
    assert m == {"rows_in": 3, "kept": 2, "dropped": 1, "dropped_by_reason": {"a": 1}, "groups": 2}
    assert json.loads((tmp_path / "metrics" / "x.json").read_text()) == m


def test_write_filter_outputs_leaves_kept_rows_to_the_stage_when_asked(tmp_path):
    rows = [r(1), r(2)]
    m = write_filter_outputs("split", rows, FilterResult(kept=rows), tmp_path / "out", tmp_path / "m.json",
                             write_kept=False)
    # no kept.jsonl (the stage writes its own partition), no details.json without details
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["dropped.jsonl"]
    assert (tmp_path / "out" / "dropped.jsonl").read_text() == ""
    assert json.loads((tmp_path / "m.json").read_text()) == m == {"rows_in": 2, "kept": 2, "dropped": 0,
                                                                 "dropped_by_reason": {}}
