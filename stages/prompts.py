"""prompts: fresh unlabeled prompts of the sample's task families, none of which the split holds."""

from pathlib import Path

import click

from stages._common import log, stage


@stage("prompts", help="Fresh unlabeled prompts for distillation and best-of-K.")
@click.option("--split", "split_dir", default="data/split", show_default=True,
              help="the rows the prompts must not repeat: its train, validation and test files")
@click.option("--out", default="data/create/prompts", show_default=True)
@click.option("--metrics", default="metrics/create/prompts.json", show_default=True)
def cli(params, split_dir, out, metrics):
    from sftpipe.create.prompts import fresh_prompts
    from sftpipe.io import read_jsonl, write_json, write_jsonl

    existing = [r for part in ("train", "validation", "test") for r in read_jsonl(Path(split_dir) / f"{part}.jsonl")]
    rows, truth, counts = fresh_prompts(existing, params.prompts)
    write_jsonl(Path(out) / "prompts.jsonl", rows)
    write_jsonl(Path(out) / "truth.jsonl", truth)
    write_json(metrics, counts)
    log.info("%d prompts (%d existing rows avoided); skipped %s%s", len(rows), len(existing), counts["skipped"],
             f"; categories short of per_category: {counts['short_categories']}" if counts["short_categories"] else "")


if __name__ == "__main__":
    cli()
