#!/usr/bin/env bash
# The GPU checks of one lent-device session, in one call (see bench/README.md). Run from the repo root on
# the GPU machine after installing the carried wheels (.whl) into PYTHONPATH; logs go to $OUT (or ./gpu_out).
# PARTS picks and orders the parts (default below); each part has its own time limit (seconds, env
# <PART>_S) so that one slow part cannot cost the others.
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD TOKENIZERS_PARALLELISM=false
quiet() { grep -v "Loading weights\|Writing model\|USDT:"; }
env_part() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 - <<'PY'
import importlib
for m in ("torch", "transformers", "peft", "trl", "datasets", "pyarrow", "accelerate", "pydantic", "dvclive", "flash_attn"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:
        print(m, "MISSING", type(e).__name__, str(e)[:120])
import torch; print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
}
for part in ${PARTS:-env profile score tests train generate}; do
  echo "=== $part $(date -u +%T)"
  case $part in
    env) env_part 2>&1 | tee "$OUT/env.txt" ;;
    profile) timeout "${PROFILE_S:-200}" python3 bench/train_profile_gpu.py 2>&1 | quiet | tee "$OUT/profile_gpu.txt" ;;
    score) timeout "${SCORE_S:-120}" python3 bench/score_gpu.py 2>&1 | quiet | tee "$OUT/score_gpu.txt" ;;
    tests) timeout "${TESTS_S:-60}" python3 -m pytest -q -p no:cacheprovider -x \
             "tests/test_perplexity.py::test_scores_on_an_accelerator_equal_cpu_scores" 2>&1 | tee "$OUT/tests_gpu.txt" ;;
    train) timeout "${TRAIN_S:-340}" python3 bench/train_gpu.py --repeats "${REPEATS:-2}" \
             --configs "${CONFIGS:-ours_padded,ours_pf,trl,ours_dense}" 2>&1 | quiet | tee "$OUT/train_gpu.txt" ;;
    generate) timeout "${GEN_S:-150}" python3 bench/generate_gpu.py --prompts 128 --loop-prompts 8 \
             --batch-sizes 16,128 2>&1 | quiet | tee "$OUT/generate_gpu.txt" ;;
    *) echo "unknown part $part" ;;
  esac
done
