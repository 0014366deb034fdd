"""perplexity: score every row with a reference causal LM; drop rows outside the bounds."""

import click

from stages._common import log, progress, stage


@stage("perplexity", help="Score rows with a reference LM and drop outliers.")
@click.option("--inp", default="data/label_noise/kept.jsonl", show_default=True)
@click.option("--out", default="data/perplexity", show_default=True)
@click.option("--metrics", default="metrics/perplexity.json", show_default=True)
@click.option("--plot", default="metrics/plots/perplexity.csv", show_default=True)
@click.option("--picture", default="metrics/plots/perplexity.png", show_default=True)
def cli(params, inp, out, metrics, plot, picture):
    from sftpipe.io import read_jsonl, write_csv
    from sftpipe.ledger import FilterResult, write_filter_outputs
    from sftpipe.model.loading import load_model, load_tokenizer
    from sftpipe.perplexity import histogram_rows, ifd_rows, perplexity_filter, plot_groups, score_rows
    from sftpipe.plots import perplexity_png

    ppl_params = params.perplexity
    records = read_jsonl(inp)
    if not ppl_params.enabled:
        result = FilterResult(kept=records, extra_metrics={"skipped": "disabled"})
    else:
        model_params = params.model.model_copy(update={"name_or_path": ppl_params.model or params.model.name_or_path})
        model = load_model(model_params, precision=ppl_params.precision).eval()
        tokenizer = load_tokenizer(model_params)
        with progress(len(records), "perplexity") as bar:
            scores = score_rows(model, tokenizer, records, ppl_params, bar)
        ifd = None
        if ppl_params.ifd:
            with progress(len(records), "ifd") as bar:
                ifd = ifd_rows(model, tokenizer, records, ppl_params, scores, bar)
        result = perplexity_filter(records, scores, ppl_params, ifd)
    m = write_filter_outputs("perplexity", records, result, out, metrics)
    write_csv(plot, ["group", "log10_ppl", "kept", "dropped"], histogram_rows(result))
    perplexity_png(plot_groups(result), picture)
    log.info("%d rows in, %d kept, dropped %s (median ppl %s)", m["rows_in"], m["kept"], m["dropped_by_reason"],
             m.get("median_ppl"))


if __name__ == "__main__":
    cli()
