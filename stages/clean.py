"""clean: repair broken text (mojibake, HTML, control/zero-width characters, whitespace) and mask PII."""

import click

from stages._common import log, stage


@stage("clean", help="Repair broken text (mojibake, HTML, invisible characters, whitespace) and mask PII.")
@click.option("--inp", default="data/collected/data.jsonl", show_default=True)
@click.option("--out", default="data/clean", show_default=True)
@click.option("--metrics", default="metrics/clean.json", show_default=True)
def cli(params, inp, out, metrics):
    from sftpipe.clean.stream import clean_jsonl

    # a chunk of rows at a time, the bytes clean_records + write_filter_outputs would write
    m, _ = clean_jsonl(inp, out, metrics, params.clean)
    log.info("%d rows in, %d kept (%d changed: %s), dropped %s", m["rows_in"], m["kept"], m["rows_changed"],
             ", ".join(f"{k} {v}" for k, v in m["rows_changed_by_rule"].items()) or "none",
             m["dropped_by_reason"])


if __name__ == "__main__":
    cli()
