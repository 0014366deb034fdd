"""sample: write the offline sample sources (4 chat files in 3 formats, 2 tool-use files) and their ground truth."""

import click

from stages._common import log, stage


@stage("sample", help="Generate the offline sample dataset with known injected defects.")
@click.option("--out", default="data/raw", show_default=True)
def cli(params, out):
    from sftpipe.sample import generate

    counts = generate(params.sample, out)
    log.info("wrote %d rows to %s: %s", counts["rows"], out,
             ", ".join(f"{k} {v}" for k, v in counts.items() if k not in ("rows", "per_source")))


if __name__ == "__main__":
    cli()
