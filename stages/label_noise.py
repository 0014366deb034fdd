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
    from sftpipe.io import write_csv
    from sftpipe.label_noise import label_noise_jsonl
    from sftpipe.plots import label_issues_png

    # two passes over the file: labels and texts first, then the rows as decided (never all records at once)
    m, details = label_noise_jsonl(inp, out, metrics, params.label_noise)
    per_class = details.get("per_class", {})
    write_csv(plot, ["class", "rows", "issues"], [[c, v["rows"], v["issues"]] for c, v in per_class.items()])
    label_issues_png(per_class, picture)
    log.info("%d rows in, %d label issues (action %s), %d kept, %d dropped", m["rows_in"], m["issues"],
             params.label_noise.action, m["kept"], m["dropped"])


if __name__ == "__main__":
    cli()
