"""The data card and the ground-truth quality metrics, on hand-made ledgers."""

import json
from pathlib import Path

from sftpipe.io import write_json, write_jsonl
from sftpipe.ledger import drop
from sftpipe.report import data_card, truth_metrics


def rec(i):
    return {"id": f"s:{i}", "label": "a", "source": "s", "meta": {},
            "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


def build(tmp: Path):
    d, m = tmp / "data", tmp / "metrics"
    rows = [rec(i) for i in range(10)]
    truth = {r["id"]: {"id": r["id"], "defect": None} for r in rows}
    truth["s:1"] = {"id": "s:1", "defect": "exact_dup", "of": "s:0"}
    truth["s:3"] = {"id": "s:3", "defect": "near_dup", "of": "s:2"}
    truth["s:4"] = {"id": "s:4", "defect": "label_flip"}
    truth["s:5"] = {"id": "s:5", "defect": "garbage", "garbage_type": "mojibake"}
    truth["s:6"] = {"id": "s:6", "defect": "garbage", "garbage_type": "boilerplate"}
    write_jsonl(d / "collected" / "data.jsonl", rows)
    write_jsonl(d / "collected" / "quarantine.jsonl", [{"source": "s", "path": "x.jsonl", "line": 3, "record": 3,
                                                        "reason": "malformed_json", "field": None,
                                                        "message": "malformed JSON"}])
    # dedup catches the exact dup only; label noise flags s:4 and (wrongly) s:7; perplexity drops s:5
    write_jsonl(d / "dedup" / "kept.jsonl", [r for r in rows if r["id"] != "s:1"])
    write_jsonl(d / "dedup" / "dropped.jsonl", [drop(rows[1], "dedup", "exact_duplicate", kept_id="s:0")])
    ln_kept = [r for r in rows if r["id"] not in ("s:1", "s:4", "s:7")]
    write_jsonl(d / "label_noise" / "kept.jsonl", ln_kept)
    write_jsonl(d / "label_noise" / "dropped.jsonl", [drop(rows[4], "label_noise", "label_issue"),
                                                      drop(rows[7], "label_noise", "label_issue")])
    pp_kept = [r for r in ln_kept if r["id"] != "s:5"]
    write_jsonl(d / "perplexity" / "dropped.jsonl", [drop(rows[5], "perplexity", "perplexity_high", ppl=1e5)])
    write_jsonl(d / "split" / "train.jsonl", pp_kept)
    for s in ("validation", "test"):
        write_jsonl(d / "split" / f"{s}.jsonl", [])
    write_jsonl(d / "split" / "dropped.jsonl", [])
    write_json(m / "collect.json", {"rows_in": 11, "kept": 10, "quarantined": 1,
                                    "quarantined_by_reason": {"malformed_json": 1}})
    write_json(m / "dedup.json", {"rows_in": 10, "kept": 9, "dropped": 1, "dropped_by_reason": {"exact_duplicate": 1}})
    return d, m, truth


def test_truth_metrics_measure_each_filter(tmp_path):
    d, _, truth = build(tmp_path)
    q = truth_metrics(truth, d)
    assert q["dedup_exact_dup_recall"] == 1.0 and q["dedup_near_dup_recall"] == 0.0
    assert q["label_noise_precision"] == 0.5 and q["label_noise_recall"] == 1.0
    assert q["perplexity_garbage_removed"] == 0.5 and q["perplexity_garbage_missed_by_type"] == {"boilerplate": 1}
    # left in the final data: garbage s:6, and the redundant copy s:3 of the near-duplicate pair s:2/s:3
    assert q["final_defective_rows"] == 2 and q["final_rows"] == 6


def test_truth_metrics_empty_when_truth_is_for_other_data(tmp_path):
    d, _, _ = build(tmp_path)
    assert truth_metrics({"other:1": {"id": "other:1", "defect": None}}, d) == {}


def test_data_card_lists_stages_reasons_and_examples(tmp_path):
    d, m, truth = build(tmp_path)
    card = data_card(d, m, truth_metrics(truth, d))
    assert "| collect | 11 | 10 | 1 | malformed_json 1 |" in card
    assert "| dedup | 10 | 9 | 1 | exact_duplicate 1 |" in card
    assert "### label_noise / label_issue (2 rows)" in card and '"q4 / a4"' in card
    assert "### collect / malformed_json (1 rows)" in card and "`x.jsonl:3`" in card
    assert "| label_noise_f1 |" in card


def test_data_card_shows_every_stage_picture_by_its_path(tmp_path):
    from sftpipe.report import PICTURES

    d, m, truth = build(tmp_path)
    card = data_card(d, m, truth_metrics(truth, d))
    section = card.split("## Pictures", 1)[1].split("\n## ", 1)[0]
    shown = [line for line in section.splitlines() if line.startswith("![")]
    assert shown == [f"![{title}]({path})" for title, path in PICTURES]
    assert [p for _, p in PICTURES] == ["plots/dedup_clusters.png", "plots/label_issues.png", "plots/perplexity.png",
                                        "plots/select.png", "plots/training_curves.png"]


def test_clean_and_paraphrases_are_measured_against_the_truth(tmp_path):
    """clean: a defect counts as repaired only when the kept text is the expected one; a defect-free
    row it changed is counted. dedup: rows with the same task slots and the same answer are paraphrases
    it should reduce to one; a dropped row outside any injected pair or paraphrase group is an error."""
    d, m, truth = build(tmp_path)
    rows = [rec(i) for i in range(10)]
    truth["s:8"] = {"id": "s:8", "defect": "clean_defect", "clean_defect": "html", "expected": "a8"}
    truth["s:9"] = {"id": "s:9", "defect": "clean_defect", "clean_defect": "mojibake", "expected": "right"}
    truth["s:0"]["slots"] = truth["s:7"]["slots"] = "('en', 'x')"
    rows[7]["messages"][-1]["content"] = "A0!"            # same answer as s:0 once normalized
    rows[2]["meta"] = {"clean": ["whitespace"]}           # a defect-free row that clean changed
    write_jsonl(d / "collected" / "data.jsonl", rows)
    write_jsonl(d / "clean" / "kept.jsonl", rows)         # s:9 kept with the wrong text
    write_jsonl(d / "clean" / "dropped.jsonl", [])
    write_jsonl(d / "dedup" / "dropped.jsonl", [drop(rows[1], "dedup", "exact_duplicate", kept_id="s:0"),
                                                drop(rows[7], "dedup", "paraphrase", kept_id="s:0")])
    q = truth_metrics(truth, d)
    assert q["clean_repaired"] == 0.5 and q["clean_repaired_by_kind"] == {"html": 1.0, "mojibake": 0.0}
    assert q["clean_defect_free_rows_changed"] == round(1 / 3, 4)   # s:2 of the defect-free s:0, s:2, s:7
    assert q["dedup_paraphrase_recall"] == 1.0 and q["dedup_other_rows_dropped"] == 0.0
    write_json(m / "clean.json", {"rows_in": 10, "kept": 10, "dropped": 0, "rows_changed": 1,
                                  "rows_changed_by_rule": {"whitespace": 1}})
    write_json(d / "clean" / "details.json", {"examples": {"whitespace": [{"id": "s:2", "message": 1,
                                                                          "before": "a2  ", "after": "a2"}]}})
    card = data_card(d, m, q)
    assert "| clean | 10 | 10 | 0 |" in card and '`s:2` message 1: "a2  " → "a2"' in card
