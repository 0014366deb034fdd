"""collect: every configured source into one canonical JSONL, bad rows quarantined."""

from pathlib import Path

import click

from stages._common import log, progress, stage


@stage("collect", help="Read all sources into the canonical schema.")
@click.option("--out", default="data/collected", show_default=True)
@click.option("--metrics", default="metrics/collect.json", show_default=True)
def cli(params, out, metrics):
    from sftpipe.collect.sources import collect
    from sftpipe.io import write_json, write_jsonl

    with progress(None, "collect") as bar:
        res = collect(params.collect, bar)
    write_jsonl(Path(out) / "data.jsonl", res.records)
    write_jsonl(Path(out) / "quarantine.jsonl", res.quarantine)
    m = res.metrics()
    write_json(metrics, m)
    log.info("%d rows in, %d kept, %d quarantined %s", m["rows_in"], m["kept"], m["quarantined"],
             m["quarantined_by_reason"] or "")


if __name__ == "__main__":
    cli()
