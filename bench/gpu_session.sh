#!/usr/bin/env bash
# The GPU checks of one lent-device session, in one call (see bench/README.md). Run from the repo root on
# the GPU machine after installing the carried wheels (.whl) into PYTHONPATH; logs go to $OUT (or ./gpu_out).
# Each part has its own time limit so that one slow part cannot cost the others.
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD TOKENIZERS_PARALLELISM=false
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 - <<'PY'
import importlib
for m in ("torch", "transformers", "peft", "trl", "datasets", "pyarrow", "accelerate", "pydantic", "flash_attn"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:
        print(m, "MISSING", type(e).__name__, str(e)[:120])
import torch; print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
} 2>&1 | tee "$OUT/env.txt"
timeout "${TRAIN_S:-340}" python3 bench/train_gpu.py --repeats "${REPEATS:-2}" \
  --configs "${CONFIGS:-ours_padded,ours_pf,trl,ours_dense}" 2>&1 | grep -v "Loading weights\|Writing model" | tee "$OUT/train_gpu.txt"
timeout "${GEN_S:-150}" python3 bench/generate_gpu.py --prompts 128 --loop-prompts 8 --batch-sizes 16,128 2>&1 \
  | grep -v "Loading weights\|Writing model" | tee "$OUT/generate_gpu.txt"
