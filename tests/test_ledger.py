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
