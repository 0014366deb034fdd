"""best_of_k: the best verified candidate per prompt becomes a training row; prompts with no good
enough candidate are rejected (rejection sampling), each with its reason and evidence in the ledger."""

from collections import defaultdict
from pathlib import Path

import click

from stages._common import log, stage


@stage("best_of_k", help="Keep the best candidate per prompt; reject prompts without a good one.")
@click.option("--prompts", default="data/create/prompts/prompts.jsonl", show_default=True)
@click.option("--candidates", default="data/create/candidates", show_default=True,
              help="the generate stage's folder: candidates.jsonl and dropped.jsonl (failed prompts)")
@click.option("--rewards", default="data/create/rewards.jsonl", show_default=True)
@click.option("--out", default="data/create/best_of_k", show_default=True)
@click.option("--metrics", default="metrics/create/best_of_k.json", show_default=True)
def cli(params, prompts, candidates, rewards, out, metrics):
    from sftpipe.create.best_of_k import best_of_k
    from sftpipe.create.verify import Verdict
    from sftpipe.errors import UserError
    from sftpipe.io import read_jsonl, write_jsonl
    from sftpipe.ledger import write_filter_outputs

    records = read_jsonl(prompts)
    cands = read_jsonl(Path(candidates) / "candidates.jsonl")
    failed_path = Path(candidates) / "dropped.jsonl"
    errors = {d["id"]: d["evidence"].get("error") for d in read_jsonl(failed_path)} if failed_path.is_file() else {}
    reward = {r["id"]: r for r in read_jsonl(rewards)}
    missing = [c["id"] for c in cands if c["id"] not in reward]
    if missing:
        raise UserError(f"{rewards}: no reward for {len(missing)} candidates (e.g. {missing[0]}); rerun the reward stage")
    by_prompt = defaultdict(list)
    for c in cands:
        by_prompt[c["meta"]["candidate_of"]].append(c)
    results, verdicts, scores = [], [], []
    for rec in records:
        cs = sorted(by_prompt.get(rec["id"], []), key=lambda c: c["meta"]["candidate"])
        results.append({"replies": [c["messages"][-1]["content"] for c in cs] or None,
                        "error": errors.get(rec["id"], None if cs else "no candidates")})
        verdicts.append([Verdict(reward[c["id"]]["ok"], reward[c["id"]]["rule"], reward[c["id"]]["expected"]) for c in cs])
        scores.append([reward[c["id"]]["score"] for c in cs])
    bp = params.best_of_k
    result = best_of_k(records, results, scores, bp.unverifiable, bp.min_score, verdicts)
    m = write_filter_outputs("best_of_k", records, result, out, metrics, write_kept=False)
    write_jsonl(Path(out) / "train.jsonl", result.kept)
    log.info("%d prompts: %d kept (%d verified), rejected %s", len(records), m["kept"], m["kept_verified"],
             m["dropped_by_reason"])


if __name__ == "__main__":
    cli()
