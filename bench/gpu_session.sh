#!/usr/bin/env bash
# The GPU checks of one lent-device session, in one call (see bench/README.md). Run from the repo root on
# the GPU machine after installing the carried wheels (.whl) into PYTHONPATH; logs go to $OUT (or ./gpu_out).
# PARTS picks and orders the parts (default below); each part has its own time limit (seconds, env
# <PART>_S) so that one slow part cannot cost the others.
# Packages may also travel as pre-installed site folders packed with tar -cJ (smaller than wheels: the
# pipeline's 93 packages are 23 MB this way, 40 MB as wheels): SITES="a.tar.xz b.tar.xz", each holding one
# top folder that is unpacked under /tmp and put on PYTHONPATH.
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
for t in ${SITES:-}; do
  top=$(tar -tJf "$t" | head -1 | cut -d/ -f1); tar -xJf "$t" -C /tmp && PYTHONPATH=/tmp/$top${PYTHONPATH:+:$PYTHONPATH}
done
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD TOKENIZERS_PARALLELISM=false
# the pipeline's stages call the `sftpipe` command: a shim for this checkout
mkdir -p /tmp/sftpipe-bin && printf '#!/bin/sh\nexec python3 -m stages.cli "$@"\n' >/tmp/sftpipe-bin/sftpipe
chmod +x /tmp/sftpipe-bin/sftpipe && export PATH=/tmp/sftpipe-bin:$PATH
quiet() { grep -v "Loading weights\|Writing model\|USDT:"; }
stamp() { while IFS= read -r l; do printf '%s %s\n' "$(date -u +%T)" "$l"; done; }
env_part() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 - <<'PY'
import importlib
for m in ("torch", "transformers", "peft", "trl", "datasets", "pyarrow", "accelerate", "pydantic", "dvclive", "flash_attn",
          "dvc", "ray", "numpy", "sklearn", "cleanlab", "datasketch"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:
        print(m, "MISSING", type(e).__name__, str(e)[:120])
import torch; print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
}
# The default pipeline through `dvc repro` on this machine (no git here: DVC without an SCM), timed per
# stage; the lock and metrics before and after come back in $OUT/repro.tgz to compare with the CPU run's.
repro_part() {
  cp dvc.lock "$OUT/dvc.lock.cpu"
  python3 -m dvc config --local core.no_scm true && python3 -m dvc version | head -3
  local t0=$SECONDS; timeout "${REPRO_S:-300}" python3 -m dvc repro 2>&1 | quiet \
    | grep -v "^ *[0-9]*%|\|it/s\]$" | stamp | tail -c 20000
  echo "dvc repro rc ${PIPESTATUS[0]} in $((SECONDS - t0)) s"
  tar -czf "$OUT/repro.tgz" dvc.lock metrics 2>/dev/null
}
for part in ${PARTS:-env profile score tests train generate}; do
  echo "=== $part $(date -u +%T)"
  case $part in
    env) env_part 2>&1 | tee "$OUT/env.txt" ;;
    profile) timeout "${PROFILE_S:-200}" python3 bench/train_profile_gpu.py 2>&1 | quiet | tee "$OUT/profile_gpu.txt" ;;
    score) timeout "${SCORE_S:-120}" python3 bench/score_gpu.py ${SCORE_ARGS:-} 2>&1 | quiet | tee "$OUT/score_gpu.txt" ;;
    repro) repro_part 2>&1 | tee "$OUT/repro.txt" ;;
    tests) timeout "${TESTS_S:-60}" python3 -m pytest -q -p no:cacheprovider -x \
             "tests/test_perplexity.py::test_scores_on_an_accelerator_equal_cpu_scores" \
             "tests/test_perplexity.py::test_scores_on_an_accelerator_are_the_same_bits_on_a_rerun" \
             2>&1 | tee "$OUT/tests_gpu.txt" ;;
    train) timeout "${TRAIN_S:-340}" python3 bench/train_gpu.py --repeats "${REPEATS:-2}" ${TRAIN_ARGS:-} \
             --configs "${CONFIGS:-ours_padded,ours_pf,trl,ours_dense}" 2>&1 | quiet | tee "$OUT/train_gpu.txt" ;;
    generate) timeout "${GEN_S:-150}" python3 bench/generate_gpu.py --prompts 128 --loop-prompts 8 \
             --batch-sizes 16,128 2>&1 | quiet | tee "$OUT/generate_gpu.txt" ;;
    *) echo "unknown part $part" ;;
  esac
done
