"""Would a larger offline teacher help distillation? Pretrain a wider/deeper base on the base stage's own
corpus and tokenizer, for the base's steps, then (unless ``--pretrain-only``) fine-tune it in full with
the ``teacher`` params on the training rows and score it on the frozen test rows, as
``bench/create_experiment.py`` scores the create pipeline's teacher.

Compare with ``metrics/base.json`` (the base's ``final_loss``, the mean training loss of its last 10% of
steps, on the same corpus and tokens) and with ``metrics/create/teacher.json`` / the README's teacher EM.

    PYTHONPATH=. python bench/teacher_size.py --hidden 320 --layers 6 --mlp 864 --heads 5      # ~15 min, 2 cores
    PYTHONPATH=. python bench/teacher_size.py --hidden 256 --layers 6 --mlp 704 --lr 0.002 --pretrain-only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, command_line, score_sets, setup_env  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, required=True)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--mlp", type=int, required=True, help="intermediate size")
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--steps", type=int, default=None, help="default: base.steps")
    ap.add_argument("--lr", type=float, default=None, help="default: base.lr")
    ap.add_argument("--pretrain-only", action="store_true")
    ap.add_argument("--teacher-max-steps", type=int, default=None, help="cap the fine-tuning (a smoke run)")
    a = ap.parse_args()
    setup_env()
    from transformers import AutoTokenizer

    from sftpipe.config import load_params
    from sftpipe.io import read_jsonl
    from sftpipe.model.basemodel import pretrain
    from sftpipe.model.loading import load_sft
    from sftpipe.model.train import train
    from sftpipe.sample import pretrain_corpus

    params = load_params(REPO / "params.yaml")
    shape = {"hidden_size": a.hidden, "num_layers": a.layers, "intermediate_size": a.mlp, "num_heads": a.heads}
    bp = params.base.model_copy(update={**shape, "steps": a.steps or params.base.steps, "lr": a.lr or params.base.lr})
    corpus = pretrain_corpus(bp.languages, bp.corpus_rows, bp.seed, tool_share=bp.tool_docs)
    tok = AutoTokenizer.from_pretrained(REPO / "models" / "base")
    base_summary = json.loads((REPO / "metrics" / "base.json").read_text())
    with tempfile.TemporaryDirectory(prefix="teacher_size_") as tmp:
        out = Path(tmp)
        s = pretrain(bp, corpus, out / "base", tokenizer=tok, name="teacher base")
        print(f"pretrain: {s['params_m']}M params, {bp.steps} steps at lr {bp.lr}: final loss {s['final_loss']} "
              f"in {s['wall_s']} s (the base stage's model: {base_summary['params_m']}M, final loss "
              f"{base_summary['final_loss']})", flush=True)
        if a.pretrain_only:
            print(command_line())
            return
        mp = params.model.model_copy(update={"name_or_path": str(out / "base")})
        rows = read_jsonl(REPO / "data/select/train.jsonl")
        val, test = (read_jsonl(REPO / "data/split" / f) for f in ("validation.jsonl", "test.jsonl"))
        t0 = time.perf_counter()
        tp = params.teacher if a.teacher_max_steps is None else params.teacher.model_copy(
            update={"max_steps": a.teacher_max_steps})
        summary = train(rows, val, mp, tp, params.lora, out / "teacher", out / "ckpt", out / "live")
        r = score_sets(params, *load_sft(mp, out / "teacher"), {"test": test})["test"]
        print(f"teacher ({tp.method}, {len(rows)} rows): {time.perf_counter() - t0:.0f} s, validation "
              f"loss {summary['val_loss']}; test ({len(test)} rows) EM {r['exact_match']:.3f}, ROUGE-L "
              f"{r['rougeL']:.4f}, loss {r['loss']:.4f}", flush=True)
        print("per-category EM:", json.dumps(r["per_category_em"]))
    print(command_line())


if __name__ == "__main__":
    main()
