"""evaluate: test loss/perplexity, greedy generations, ROUGE/BLEU/chrF/EM; base vs SFT."""

import click

from stages._common import log, progress, stage


@stage("evaluate", help="Score base and SFT models on the test split.")
@click.option("--test", "test_path", default=None, help="default: evaluate.test_file")
@click.option("--sft", "sft_dir", default="models/sft", show_default=True)
@click.option("--metrics", default="metrics/eval.json", show_default=True)
@click.option("--details", default="metrics/eval_details.json", show_default=True)
@click.option("--deltas", default="metrics/eval_deltas.md", show_default=True)
@click.option("--predictions", default="data/eval/predictions.jsonl", show_default=True)
def cli(params, test_path, sft_dir, metrics, details, deltas, predictions):
    from sftpipe.io import read_jsonl, write_json, write_jsonl, write_text
    from sftpipe.model import evaluation
    from sftpipe.model.loading import fit_embeddings, load_model, load_sft

    eval_params = params.evaluate
    rows = read_jsonl(test_path or eval_params.test_file)[: eval_params.max_rows]
    sft, tok = load_sft(params.model, sft_dir)
    base = load_model(params.model).eval()
    fit_embeddings(base, tok)      # the chat template's tokens, untrained in the base
    scores, preds = {}, {}
    for name, model in (("base", base), ("sft", sft)):
        with progress(len(rows), f"generate ({name})") as bar:
            scores[name], preds[name] = evaluation.score_model(name, model, tok, rows, eval_params.max_new_tokens,
                                                               eval_params.batch_size, params.train.max_length, bar)
    general = _general_text(params)
    if general:
        for name, model in (("base", base), ("sft", sft)):
            nll, n = evaluation.text_loss(model, tok, general, eval_params.batch_size, params.train.max_length)
            scores[name].update(general_loss=round(nll, 4), general_tokens=n)
    cats = evaluation.per_category(rows, preds)
    write_json(metrics, {"base": scores["base"], "sft": scores["sft"], "delta": evaluation.deltas(scores["base"], scores["sft"]),
                         "rows": len(rows)})
    write_json(details, {"per_category": cats})
    write_text(deltas, evaluation.deltas_markdown(scores["base"], scores["sft"], cats))
    write_jsonl(predictions, [{"id": r["id"], "label": r.get("label"), "lang": r["meta"].get("lang"),
                               "reference": evaluation.reference(r), "base": b, "sft": s}
                              for r, b, s in zip(rows, preds["base"], preds["sft"])])
    b, s = scores["base"], scores["sft"]
    if "tool_call_accuracy" in s:
        log.info("%d rows with tools: call accuracy %.3f -> %.3f, argument EM %.3f -> %.3f (base -> sft)",
                 s["tool_rows"], b["tool_call_accuracy"], s["tool_call_accuracy"], b.get("tool_args_exact_match", 0),
                 s.get("tool_args_exact_match", 0))
    if general:
        log.info("forgetting check, %d general-text documents: loss %.3f -> %.3f (base -> sft)", len(general),
                 b["general_loss"], s["general_loss"])
    log.info("%d test rows: ROUGE-L %.3f -> %.3f, EM %.3f -> %.3f, loss %.3f -> %.3f (base -> sft)", len(rows),
             b["rougeL"], s["rougeL"], b["exact_match"], s["exact_match"], b["loss"], s["loss"])


def _general_text(params) -> list[str]:
    """evaluate.general_text, else the base model's held-out pretraining documents when it has them."""
    from pathlib import Path

    from sftpipe.model.evaluation import read_general_text

    path = params.evaluate.general_text
    if path is None:
        default = Path(params.model.name_or_path) / "heldout.jsonl"
        if not default.is_file():
            log.info("forgetting check skipped: no evaluate.general_text and no %s", default)
            return []
        path = default
    return read_general_text(path)


if __name__ == "__main__":
    cli()
