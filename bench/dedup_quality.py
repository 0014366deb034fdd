"""Quality of near-duplicate detection against exact Jaccard ground truth.

Builds an English + Chinese set (sftpipe.sample.neardup: originals plus edited
variants over a wide range of similarity), computes the ground truth EXACTLY
(every pair whose Jaccard on the reference shingle strings reaches the
threshold, from a sparse product of the shingle incidence matrix), then runs
the dedup core with verify on and off and prints precision and recall, per
language and overall:

* pairs:    accepted candidate pairs vs truth pairs;
* clusters: pairs that end up in one cluster vs pairs in one connected
            component of the truth graph (what dedup actually removes).

A third configuration uses the bands/rows datasketch derives with its default
weights (0.5, 0.5), to show why the stage derives them for recall.

    python bench/dedup_quality.py [--rows 4000] [--threshold 0.8] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from sftpipe.dedup import clusters as dedup  # noqa: E402
from sftpipe.sample import neardup as bd  # noqa: E402
from sftpipe.config import DedupParams  # noqa: E402

TARGET = 0.95


def by_lang(pairs: set, langs: list[str]) -> dict[str, set]:
    out = {"en": set(), "zh": set()}
    for i, j in pairs:
        out.setdefault(langs[i] if langs[i] == langs[j] else "mixed", set()).add((i, j))
    out["all"] = set(pairs)
    return out


def detected_pairs(res: dedup.DupResult) -> set:
    """Accepted pairs in text space, byte-identical copies included."""
    found = {tuple(x) for x in res.pairs[res.accepted].tolist()}
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(res.exact_rep.tolist()):
        groups.setdefault(r, []).append(i)
    for g in groups.values():
        found |= {(a, b) for k, a in enumerate(g) for b in g[k + 1:]}
    # a pair of representatives stands for all their copies
    expanded = set()
    for a, b in found:
        for x in groups[res.exact_rep[a]]:
            for y in groups[res.exact_rep[b]]:
                if x != y:
                    expanded.add((min(x, y), max(x, y)))
    return expanded


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dup-share", type=float, default=0.4)
    ap.add_argument("--max-rate", type=float, default=0.15, help="largest per-token edit rate of a variant")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    data = bd.generate(args.rows, seed=args.seed, dup_share=args.dup_share, max_rate=args.max_rate)
    base = DedupParams(threshold=args.threshold)
    truth_j = bd.true_pairs(bd.shingle_sets(data.texts, base), args.threshold)
    truth = by_lang(set(truth_j), data.langs)
    truth_clusters = by_lang(bd.same_component_pairs(bd.components(len(data.texts), truth_j)), data.langs)
    n_en = data.langs.count("en")
    print(f"rows {len(data.texts)} (en {n_en}, zh {len(data.texts) - n_en}), variants {sum(o >= 0 for o in data.origin)}, "
          f"threshold {args.threshold}, truth pairs: en {len(truth['en'])}, zh {len(truth['zh'])}, "
          f"all {len(truth['all'])}  (ground truth {time.perf_counter() - t0:.1f}s)")
    vj = [j for j in truth_j.values()]
    hist = np.histogram(vj, bins=[args.threshold, 0.85, 0.9, 0.95, 0.999, 1.0001])[0] if vj else []
    print("truth pair Jaccard: " + ", ".join(f"{lo:.2f}-{hi:.2f}: {c}" for lo, hi, c in zip(
        [args.threshold, 0.85, 0.9, 0.95, 0.999], [0.85, 0.9, 0.95, 0.999, 1.0], hist)))

    from datasketch import MinHashLSH
    lsh = MinHashLSH(threshold=args.threshold, num_perm=base.num_perm)
    configs = [("verify on", base), ("verify off", base.model_copy(update={"verify": False})),
               ("verify on, datasketch weights 0.5/0.5", base.model_copy(update={"bands": lsh.b, "rows": lsh.r}))]
    print(f"\n{'config':40s} {'b x r':>7s} {'cand':>7s} {'lang':>4s} | {'pair P':>7s} {'pair R':>7s} | "
          f"{'clus P':>7s} {'clus R':>7s}")
    failed = False
    for name, p in configs:
        t = time.perf_counter()
        res = dedup.find_duplicates(data.texts, p)
        secs = time.perf_counter() - t
        found = by_lang(detected_pairs(res), data.langs)
        clus = by_lang(bd.same_component_pairs(res.component), data.langs)
        for lang in ("en", "zh", "all"):
            pp, pr = bd.precision_recall(found.get(lang, set()), truth[lang])
            cp, cr = bd.precision_recall(clus.get(lang, set()), truth_clusters[lang])
            label = f"{name} ({secs:.1f}s)" if lang == "en" else ""
            print(f"{label:40s} {res.bands:>3d}x{res.rows:<3d} {len(res.pairs) if lang == 'en' else '':>7} {lang:>4s} | "
                  f"{pp:7.4f} {pr:7.4f} | {cp:7.4f} {cr:7.4f}")
            if name == "verify on" and min(pp, pr) < TARGET:
                failed = True
    print(f"\ntarget at default params (verify on): pair precision and recall >= {TARGET} per language: "
          f"{'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
