"""report: the data card, and each filter measured against ground truth when there is one."""

from pathlib import Path

import click

from stages._common import log, stage


@stage("report", help="Write the data card (and ground-truth quality metrics for the sample data).")
@click.option("--data", default="data", show_default=True)
@click.option("--metrics-dir", default="metrics", show_default=True)
@click.option("--truth", default="data/raw/truth.jsonl", show_default=True)
def cli(params, data, metrics_dir, truth):
    from sftpipe.io import read_jsonl, write_json, write_text
    from sftpipe.report import data_card, truth_metrics

    t = {r["id"]: r for r in read_jsonl(truth)} if Path(truth).is_file() else {}
    quality = truth_metrics(t, Path(data)) if t else {}
    write_json(Path(metrics_dir) / "quality.json", quality)
    write_text(Path(metrics_dir) / "data_card.md", data_card(Path(data), Path(metrics_dir), quality))
    log.info("data card written; %s", ", ".join(f"{k} {v}" for k, v in quality.items()
                                                if isinstance(v, float)) or "no ground truth")


if __name__ == "__main__":
    cli()
