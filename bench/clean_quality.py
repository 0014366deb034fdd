"""Clean-stage quality against the sample's injected clean defects (seeded), and what ftfy repairs.

    PYTHONPATH=. python bench/clean_quality.py                          # 2 x 2400 rows, 4% defects, ~5 s
    PYTHONPATH=. python bench/clean_quality.py --rows-per-lang 20000 --rate 0.1

The sample is generated, written in its four formats and read back through ``collect`` (as the
pipeline reads it), then cleaned with the default ``clean`` params. Per defect kind: rows injected
and the share whose last response came out exactly as the truth's expected text (target >= 0.95).
For the defect-free rows: the share changed at all (target <= 0.01), and without the rows NFC alone
changed. Then the other defect kinds (what clean does to duplicates and garbage), and a table of
what the mojibake rule (ftfy, our config) repairs per way of breaking UTF-8, over the sample's
non-ASCII responses; then the same for the opt-in GBK rule (``clean.mojibake_gbk``), the defect-free
messages it changes (must be none) and the sample's garbage rows it would decode.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import sample_records  # noqa: E402
from sftpipe.clean import clean_records  # noqa: E402
from sftpipe.clean.text import fix_mojibake  # noqa: E402
from sftpipe.config import CleanParams, SampleParams  # noqa: E402
from sftpipe.sample import defects as D  # noqa: E402


def _breakers():
    def gbk(t, errors):
        return t.encode("utf-8").decode("gbk", errors=errors)

    return {
        "UTF-8 read as Latin-1": lambda t: D.mojibake_of(t, "latin-1"),
        "UTF-8 read as Windows-1252 (undefined bytes as C1)": lambda t: D.mojibake_of(t, "cp1252"),
        "UTF-8 read as Windows-1252, twice": lambda t: D.mojibake_of(t, "cp1252_twice"),
        "UTF-8 read as Windows-1252, undefined bytes -> U+FFFD": lambda t: t.encode("utf-8").decode(
            "cp1252", errors="replace"),
        "UTF-8 read as GBK, bad bytes -> U+FFFD": lambda t: gbk(t, "replace"),
        "UTF-8 read as GBK, only texts that decode without error": lambda t: gbk(t, "strict"),
        "UTF-8 read as Big5, bad bytes -> U+FFFD": lambda t: t.encode("utf-8").decode("big5", errors="replace"),
        "UTF-8 read as Shift-JIS, bad bytes -> U+FFFD": lambda t: t.encode("utf-8").decode("shift_jis",
                                                                                          errors="replace"),
        "GBK bytes read as Latin-1": lambda t: t.encode("gbk").decode("latin-1"),
    }


def repair_table(texts: list[str], breakers: dict, fix, want=lambda t: t, untouched=lambda b: b) -> None:
    """Per way of breaking a text (``breakers``: name -> function, which may raise): the texts it
    changes, and the share ``fix`` gives back as ``want(text)``, changes otherwise, or leaves as
    ``untouched(broken)`` would."""
    print("\n| how the text was broken | texts | repaired exactly | changed, not repaired | unchanged |\n"
          "|---|---|---|---|---|")
    for name, brk in breakers.items():
        n = exact = changed = 0
        for t in texts:
            try:
                broken = brk(t)
            except (UnicodeDecodeError, UnicodeEncodeError):
                continue
            if broken == t:
                continue
            n += 1
            fixed, target = fix(broken), want(t)
            exact += fixed == target
            changed += fixed != target and fixed != untouched(broken)
        if n:
            print(f"| {name} | {n} | {exact / n:.3f} | {changed / n:.3f} | {(n - exact - changed) / n:.3f} |")


def ftfy_table(texts: list[str]) -> None:
    repair_table(texts, _breakers(), lambda b: fix_mojibake(b)[0])


def gbk_table(texts: list[str], rows: list[dict], truth: dict) -> None:
    """The opt-in ``clean.mojibake_gbk`` rule (after ftfy's): repaired exactly per way of reading UTF-8
    as GBK, defect-free texts it changes, and what it does to the sample's garbage mojibake."""
    from sftpipe.clean import clean_text
    on = CleanParams(mojibake_gbk=True)
    rule_only = CleanParams(**{**{k: False for k in ("mojibake", "newlines", "html", "control_chars",
                                                     "zero_width", "whitespace")}, "unicode": "none", "pii": [],
                               "mojibake_gbk": True})
    breakers = {
        "UTF-8 read as GBK (texts that decode without error)": lambda t: t.encode("utf-8").decode("gbk"),
        "... then read once more as Latin-1": lambda t: t.encode("utf-8").decode("gbk").encode("utf-8").decode(
            "latin-1"),
        "UTF-8 read as GBK, bad bytes -> U+FFFD": lambda t: t.encode("utf-8").decode("gbk", errors="replace"),
    }
    print("\n`clean.mojibake_gbk: true` (all default rules on as well), the same texts:")
    repair_table(texts, breakers, lambda b: clean_text(b, on)[0], want=lambda t: clean_text(t, on)[0],
                 untouched=lambda b: clean_text(b, CleanParams())[0])
    msgs = [m["content"] for r in rows if truth[r["id"]]["defect"] is None for m in r["messages"]
            if m.get("content") and not m["content"].isascii()]
    hit = sum(clean_text(m, rule_only)[0] != m for m in msgs)
    print(f"\ndefect-free non-ASCII messages the GBK rule changes: {hit}/{len(msgs)} (must be 0)")
    garb = [r for r in rows if truth[r["id"]].get("garbage_type") == "mojibake"]
    dec = sum(clean_text(r["messages"][-1]["content"], rule_only)[0] != r["messages"][-1]["content"] for r in garb)
    print(f"garbage mojibake rows (GBK of another row's text) it decodes: {dec}/{len(garb)}: why it is off "
          f"for the sample, whose garbage must stay garbage")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows-per-lang", type=int, default=2400)
    ap.add_argument("--rate", type=float, default=0.04, help="sample.clean_defect_rate")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    print("command: PYTHONPATH=. python bench/clean_quality.py " + shlex.join(sys.argv[1:]))
    sp = SampleParams(rows_per_lang=args.rows_per_lang, clean_defect_rate=args.rate, seed=args.seed)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        rows = sample_records(sp, d)
        t_gen = time.perf_counter() - t0
        truth = {json.loads(x)["id"]: json.loads(x) for x in (Path(d) / "truth.jsonl").read_text().splitlines()}
    t0 = time.perf_counter()
    res = clean_records(rows, CleanParams())
    t_clean = time.perf_counter() - t0
    by_id = {r["id"]: r for r in rows}
    out = {r["id"]: r for r in res.kept}
    dropped = {x["id"] for x in res.dropped}
    print(f"{len(rows)} rows (seed {args.seed}, clean_defect_rate {args.rate}); sample + collect {t_gen:.1f}s, "
          f"clean {t_clean:.2f}s ({len(rows) / t_clean:,.0f} rows/s); dropped {len(dropped)}\n")

    injected, exact = Counter(), Counter()
    misses: dict[str, list] = {}
    for i, t in truth.items():
        if t["defect"] != "clean_defect":
            continue
        k = t["clean_defect"]
        injected[k] += 1
        got = out[i]["messages"][-1]["content"] if i in out else None
        if got == t["expected"]:
            exact[k] += 1
        else:
            misses.setdefault(k, []).append((t["expected"], got))
    print("| defect kind | rows injected | repaired exactly | share | target >= 0.95 |\n|---|---|---|---|---|")
    for k in D.CLEAN_TYPES:
        if injected[k]:
            share = exact[k] / injected[k]
            print(f"| {k} | {injected[k]} | {exact[k]} | {share:.3f} | {'ok' if share >= 0.95 else 'MISSED'} |")
    tot_i, tot_e = sum(injected.values()), sum(exact.values())
    print(f"| all | {tot_i} | {tot_e} | {tot_e / max(tot_i, 1):.3f} | {'ok' if tot_e >= 0.95 * tot_i else 'MISSED'} |")

    clean_ids = [i for i, t in truth.items() if t["defect"] is None]
    changed = [i for i in clean_ids if i in dropped or out[i] is not by_id[i]]
    not_nfc = [i for i in changed if i in dropped or out[i]["meta"]["clean"] != ["unicode"]]
    share = len(changed) / max(len(clean_ids), 1)
    print(f"\ndefect-free rows: {len(clean_ids)}; changed at all {len(changed)} ({share:.4f}, target <= 0.01: "
          f"{'ok' if share <= 0.01 else 'MISSED'}); changed by more than NFC {len(not_nfc)}")
    if changed:
        print("  rules on changed defect-free rows:", dict(Counter(r for i in changed if i in out
                                                                  for r in out[i]["meta"]["clean"])))

    print("\n| other defect (kind) | rows | changed by clean | rules |\n|---|---|---|---|")
    other = Counter()
    chg = Counter()
    rules_by: dict = {}
    for i, t in truth.items():
        if t["defect"] in (None, "clean_defect"):
            continue
        key = (t["defect"], t.get("garbage_type") or t.get("edit") or "")
        other[key] += 1
        if i in dropped or out[i] is not by_id[i]:
            chg[key] += 1
            for r in out.get(i, {}).get("meta", {}).get("clean", []):
                rules_by.setdefault(key, Counter())[r] += 1
    for key in sorted(other):
        print(f"| {key[0]} ({key[1] or '-'}) | {other[key]} | {chg[key]} | {dict(rules_by.get(key, {}))} |")
    garb = [i for i, t in truth.items() if t.get("garbage_type") == "mojibake"]
    real = {m["content"] for r in rows for m in r["messages"] if truth[r["id"]]["defect"] is None}
    fluent = sum(out[i]["messages"][-1]["content"] in real for i in garb if i in out)
    print(f"\ngarbage mojibake rows that clean turned into a real response of the sample: {fluent}/{len(garb)} "
          f"(must be 0: garbage stays garbage)")

    for k, v in misses.items():
        print(f"\nmissed {k} (first of {len(v)}): expected {v[0][0][:120]!r}\n   got {str(v[0][1])[:120]!r}")

    texts = [by_id[i]["messages"][-1]["content"] for i in clean_ids
             if not by_id[i]["messages"][-1]["content"].isascii()]
    print(f"\nthe mojibake rule (ftfy, sftpipe.clean.text.FTFY_CONFIG) on {len(texts)} non-ASCII defect-free responses")
    ftfy_table(texts)
    gbk_table(texts, rows, truth)


if __name__ == "__main__":
    main()
