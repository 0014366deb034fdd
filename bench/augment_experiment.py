"""Does instruction augmentation help on phrasings the model never saw? (the create issue's third
experiment)

The data are made here from the sample's own task generators (``sftpipe.sample.tasks``), with the
prompt template forced, so the phrasing of every row is known without guessing:

* train: ``--train-per`` items per (category, language) in every template of the family but the
  last one (the held-out phrasing);
* test, unseen phrasing: ``--test-per`` items per (category, language) in the held-out template;
* test, seen phrasing (the control): as many in the trained templates.

Items are distinct by their slots (a test item never shares its numbers / phrase / country / review
with a train item). Arms, per seed: ``plain`` trains on the train rows; ``augmented`` on the same rows
plus ``--per-row`` rule-based variants of each (``sftpipe.create.augment.augment_rows`` with the
default rules, which never reproduce one of the sample's own templates). Student: the built-in base
with params.yaml's train/lora settings (``train.seed`` = the seed). Scored: exact match on each test
set, per category. Target: augmentation raises unseen-phrasing exact match by more than twice the
seed spread.

    PYTHONPATH=. python bench/augment_experiment.py [--seeds 0 1 2] [--train-per 100] [--test-per 20]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import mean_range, seed_verdict, setup_env, train_and_score  # noqa: E402

N_TEMPLATES = {"arithmetic": 3, "translation": 3, "sentiment": 3, "reverse": 2, "capital": 5, "invitation": 3}


def slot_key(item) -> tuple:
    return item.key[:-1]         # the key without its template index


def make_data(train_per: int, test_per: int, seed: int = 0) -> tuple[list[dict], list[dict], list[dict]]:
    from sftpipe.sample.tasks import GENERATORS

    rng = random.Random(f"augment-experiment:{seed}")
    seen: set = set()
    train, unseen, control = [], [], []

    def draw(cat, lang, template):
        for _ in range(2000):
            item = GENERATORS[cat](rng, lang, template)
            if slot_key(item) not in seen:
                seen.add(slot_key(item))
                return item
        return None

    for lang in ("en", "zh"):
        for cat, n in N_TEMPLATES.items():
            held = n - 1
            for name, rows, count, templates in (("unseen", unseen, test_per, [held]),
                                                  ("seen", control, test_per, list(range(held))),
                                                  ("train", train, train_per, list(range(held)))):
                for i in range(count):
                    item = draw(cat, lang, templates[i % len(templates)])
                    if item is None:
                        break
                    rows.append({"id": f"{name}:{lang}:{cat}:{i}", "source": "augment_experiment", "label": cat,
                                 "meta": {"lang": lang, "template": templates[i % len(templates)]},
                                 "messages": [{"role": "user", "content": item.prompt},
                                              {"role": "assistant", "content": item.response}]})
    return train, unseen, control


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-per", type=int, default=100)
    ap.add_argument("--test-per", type=int, default=20)
    ap.add_argument("--per-row", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    setup_env()
    from sftpipe.config import load_params
    from sftpipe.create.augment import augment_rows

    params = load_params("params.yaml")
    train_rows, unseen, control = make_data(args.train_per, args.test_per)
    print(f"train {len(train_rows)} rows (trained templates), test {len(unseen)} unseen-phrasing rows and "
          f"{len(control)} seen-phrasing rows; student {params.train.method} x{params.train.epochs:g} epochs", flush=True)
    runs = []
    for seed in args.seeds:
        aug_rows, res = augment_rows(train_rows, per_row=args.per_row, seed=seed)
        for arm, rows in (("plain", train_rows), ("augmented", aug_rows)):
            t0 = time.perf_counter()
            run = {"arm": arm, "seed": seed, "rows": len(rows)}
            for name, sc in train_and_score(params, rows, [], seed, {"unseen": unseen, "seen": control}).items():
                run[f"{name}_em"], run[f"{name}_rougeL"], run[f"{name}_loss"] = sc["exact_match"], sc["rougeL"], sc["loss"]
                run[f"{name}_per_category"] = sc["per_category_em"]
            run["seconds"] = round(time.perf_counter() - t0, 1)
            runs.append(run)
            print(f"seed {seed} {arm:9s} ({len(rows)} rows): unseen EM {run['unseen_em']:.4f}  loss "
                  f"{run['unseen_loss']:.4f}; seen EM {run['seen_em']:.4f}  loss {run['seen_loss']:.4f}  "
                  f"({run['seconds']} s)", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(runs, indent=1, ensure_ascii=False))
    report(runs)


def report(runs: list[dict]) -> None:
    arms = {a: [r for r in runs if r["arm"] == a] for a in ("plain", "augmented")}
    print("\n| arm | rows | unseen phrasing EM, mean [min..max] | seen phrasing EM | unseen ROUGE-L | unseen test loss "
          "| seen test loss |")
    print("|---|---|---|---|---|---|---|")
    for a, rs in arms.items():
        print(f"| {a} | {rs[0]['rows']} | " + " | ".join(mean_range([r[k] for r in rs]) for k in (
            "unseen_em", "seen_em", "unseen_rougeL", "unseen_loss", "seen_loss")) + " |")
    cats = sorted(arms["plain"][0]["unseen_per_category"])
    print("\nunseen-phrasing EM per category, plain vs augmented (mean over seeds): " + "; ".join(
        f"{c} {statistics.mean(r['unseen_per_category'][c] for r in arms['plain']):.3f} vs "
        f"{statistics.mean(r['unseen_per_category'][c] for r in arms['augmented']):.3f}" for c in cats))
    gain, bar, _ = seed_verdict([r["unseen_em"] for r in arms["augmented"]], [r["unseen_em"] for r in arms["plain"]])
    print(f"augmentation, unseen-phrasing EM: {gain:+.4f} (target: more than twice the seed spread, "
          f"{bar:.4f}) -> {'met' if gain > bar else 'not met'}")
    for name in ("unseen", "seen"):     # lower is better: the plain arm's loss minus the augmented one's
        gain, bar, verdict = seed_verdict([r[f"{name}_loss"] for r in arms["plain"]],
                                          [r[f"{name}_loss"] for r in arms["augmented"]])
        print(f"augmentation, {name}-phrasing test loss: {-gain:+.4f} (twice the seed spread {bar:.4f}) -> "
              f"{'lower' if verdict == 'wins' else 'higher' if verdict == 'loses' else 'no clear difference'}")


if __name__ == "__main__":
    main()
