"""generate: replies to prompts from a generator (a local model or an OpenAI-compatible endpoint).

``--section distill``: the teacher's reply per prompt becomes a training row (distillation data);
``--section candidates``: K replies per prompt, one candidate row each (``<id>#<j>``) for reward and
best_of_k. Every prompt is either answered or in the ledger (generation_failed, with the error)."""

from pathlib import Path

import click

from stages._common import log, progress, stage


@stage("generate", help="Replies from a generator: distillation rows or K candidates per prompt.")
@click.option("--section", type=click.Choice(["distill", "candidates"]), required=True,
              help="the params group to read, and what to write")
@click.option("--prompts", default="data/create/prompts/prompts.jsonl", show_default=True)
@click.option("--truth", default="data/create/prompts/truth.jsonl", show_default=True,
              help="the prompts' known answers (measured against, never trained on); optional")
@click.option("--out", required=True, help="folder: train.jsonl (distill) or candidates.jsonl, and the ledger")
@click.option("--metrics", required=True)
def cli(params, section, prompts, truth, out, metrics):
    from sftpipe.create.backends import candidate_rows, generate
    from sftpipe.create.verify import verify
    from sftpipe.io import read_jsonl, write_jsonl
    from sftpipe.ledger import FilterResult, drop, write_filter_outputs

    gp = getattr(params, section)
    records = read_jsonl(prompts)
    with progress(len(records), f"generate ({gp.backend}, k={gp.k})") as bar:
        results = generate(records, gp, params.model, progress=bar)
    answered = [r for r, res in zip(records, results) if res["replies"]]
    ok = [res for res in results if res["replies"]]
    failed = [drop(r, "generate", "generation_failed", error=res["error"])
              for r, res in zip(records, results) if not res["replies"]]
    generator = gp.openai.model if gp.backend == "openai" else (gp.model or params.model.name_or_path)
    rows = candidate_rows(answered, ok, generator)
    # how often the generator is right, where a rule can tell (truth: the prompts' own answers, if given)
    verdicts = [verify(r, r["messages"][-1]["content"]).ok for r in rows]
    checked = [v for v in verdicts if v is not None]
    extra = {"generator": str(generator), "backend": gp.backend, "k": gp.k, "candidates": len(rows),
             "cached_prompts": sum(bool(res.get("cached")) for res in results),
             "verified_correct": round(sum(checked) / len(checked), 4) if checked else None,
             "verifiable": len(checked)}
    if truth and Path(truth).is_file():
        ref = {t["id"]: t["response"] for t in read_jsonl(truth)}
        exact = [r["messages"][-1]["content"].strip() == ref[r["meta"]["candidate_of"]].strip()
                 for r in rows if r["meta"]["candidate_of"] in ref]
        extra["exact_match_truth"] = round(sum(exact) / len(exact), 4) if exact else None
    result = FilterResult(answered, failed, extra)
    out = Path(out)
    m = write_filter_outputs("generate", records, result, out, metrics, write_kept=False)
    if section == "distill":       # k = 1: the reply is the row's answer, under the prompt's own id
        rows = [{**r, "id": r["meta"]["candidate_of"],
                 "meta": {k: v for k, v in r["meta"].items() if k not in ("candidate_of", "candidate")}}
                for r in rows if r["meta"]["candidate"] == 0]
        write_jsonl(out / "train.jsonl", rows)
    else:
        write_jsonl(out / "candidates.jsonl", rows)
    log.info("%s: %d prompts, %d answered (%d candidates), %d failed; verified correct %s of %d checkable",
             section, len(records), len(answered), m.get("candidates", len(rows)), len(failed),
             extra["verified_correct"], len(checked))


if __name__ == "__main__":
    cli()
