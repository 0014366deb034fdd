"""label-noise: cleanlab on out-of-fold probabilities; drop, flag or relabel suspect labels."""

import click

from stages._common import log, stage


@stage("label-noise", help="Find mislabeled rows with cleanlab (drop, flag or relabel).")
@click.option("--inp", default="data/dedup/kept.jsonl", show_default=True)
@click.option("--out", default="data/label_noise", show_default=True)
@click.option("--metrics", default="metrics/label_noise.json", show_default=True)
@click.option("--plot", default="metrics/plots/label_issues.csv", show_default=True)
@click.option("--picture", default="metrics/plots/label_issues.png", show_default=True)
def cli(params, inp, out, metrics, plot, picture):
    from sftpipe.io import read_jsonl, write_csv
    from sftpipe.label_noise import label_noise_records
    from sftpipe.ledger import write_filter_outputs
    from sftpipe.plots import label_issues_png

    records = read_jsonl(inp)
    result = label_noise_records(records, params.label_noise)
    m = write_filter_outputs("label_noise", records, result, out, metrics)
    per_class = result.details.get("per_class", {})
    write_csv(plot, ["class", "rows", "issues"], [[c, v["rows"], v["issues"]] for c, v in per_class.items()])
    label_issues_png(per_class, picture)
    log.info("%d rows in, %d label issues (action %s), %d kept, %d dropped", m["rows_in"], m["issues"],
             params.label_noise.action, m["kept"], m["dropped"])


if __name__ == "__main__":
    cli()
