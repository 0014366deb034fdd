"""reward: verdicts and scores for every generated candidate (rules, length, JSON, reference-LM
log-probability, a reward model, an LLM judge: chosen in params.reward)."""

from collections import Counter

import click

from stages._common import log, progress, stage


@stage("reward", help="Score generated candidates with the reward functions in params.")
@click.option("--candidates", default="data/create/candidates/candidates.jsonl", show_default=True)
@click.option("--out", default="data/create/rewards.jsonl", show_default=True)
@click.option("--metrics", default="metrics/create/reward.json", show_default=True)
def cli(params, candidates, out, metrics):
    from sftpipe.create.reward import reward_candidates
    from sftpipe.io import read_jsonl, write_json, write_jsonl

    rows = read_jsonl(candidates)
    with progress(len(rows), "reward") as bar:
        res = reward_candidates(rows, params.reward, params.model, params.perplexity, bar)
    ok = Counter("correct" if r["ok"] else "wrong" if r["ok"] is False else "unverifiable" for r in res)
    rules = Counter(r["rule"] for r in res if r["ok"] is False)
    write_jsonl(out, res)
    scored = {k: sum(r["scores"].get(k) is not None for r in res) for k in ("logprob", "reward_model", "judge")}
    m = {"candidates": len(res), **{k: ok.get(k, 0) for k in ("correct", "wrong", "unverifiable")},
         "wrong_by_rule": dict(sorted(rules.items())), "scored": {k: v for k, v in scored.items() if v},
         "judge_errors": sum("judge_error" in r for r in res)}
    write_json(metrics, m)
    log.info("%d candidates: %d correct, %d wrong, %d unverifiable; scores %s", len(res), m["correct"], m["wrong"],
             m["unverifiable"], m["scored"] or "none asked")


if __name__ == "__main__":
    cli()
