"""augment: instruction paraphrases and format variants of the training rows (rule-based, and from
the generator of params.distill when augment.model_paraphrases is on); every drawn variant is kept or
in the ledger with its reason."""

from collections import Counter
from pathlib import Path

import click

from stages._common import log, progress, stage


@stage("augment", help="Rule-based (and model-based) instruction paraphrases of the training rows.")
@click.option("--inp", default="data/select/train.jsonl", show_default=True)
@click.option("--out", default="data/create/augment", show_default=True,
              help="train.jsonl (the rows and their variants), dropped.jsonl, details.json")
@click.option("--metrics", default="metrics/create/augment.json", show_default=True)
def cli(params, inp, out, metrics):
    from sftpipe.create.augment import augment_rows, paraphrase_prompts
    from sftpipe.io import read_jsonl, write_json, write_jsonl
    from sftpipe.ledger import FilterResult, check_accounting

    ap = params.augment
    records = read_jsonl(inp)
    rows, res = augment_rows(records, None if ap.rules == "default" else ap.rules, per_row=ap.per_row,
                             seed=ap.seed, keep_original=ap.keep_original)
    extra = {"rule_" + k: v for k, v in res.extra_metrics.items()}
    dropped, details = list(res.dropped), dict(res.details)
    if ap.model_paraphrases:
        with progress(len(records), "paraphrase") as bar:
            mres = paraphrase_prompts(records, params.distill, params.model, ap.template, min_rouge=ap.min_rouge,
                                      length_ratio=tuple(ap.length_ratio), keep_numbers=ap.keep_numbers,
                                      progress=bar)
        candidates = [r["id"] for r in mres.kept] + [d["id"] for d in mres.dropped]
        check_accounting("augment", candidates, [r["id"] for r in mres.kept], [d["id"] for d in mres.dropped])
        rows += mres.kept
        dropped += mres.dropped
        extra.update({"model_" + k: v for k, v in mres.extra_metrics.items()})
        details.update({"model_" + k: v for k, v in mres.details.items()})
    result = FilterResult(rows, dropped, extra, details)
    out = Path(out)
    write_jsonl(out / "train.jsonl", result.kept)
    write_jsonl(out / "dropped.jsonl", result.dropped)
    write_json(out / "details.json", result.details)
    reasons = Counter(d["reason"] for d in result.dropped)
    m = {"rows_in": len(records), "rows_out": len(result.kept), "variants": len(result.kept) - len(records) * ap.keep_original,
         "dropped_by_reason": dict(sorted(reasons.items())), **extra}
    write_json(metrics, m)
    log.info("%d rows in, %d out (%d variants); dropped %s; %s rows matched no rule", len(records), len(result.kept),
             m["variants"], m["dropped_by_reason"], extra.get("rule_rows_without_rule"))


if __name__ == "__main__":
    cli()
