#!/usr/bin/env bash
# Create .venv and install the pinned environment. Idempotent: rerunning is quick.
# torch goes first, alone: its CPU wheel is small, while a bare `torch` requirement
# resolved with nothing installed pulls gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
  "$PY" -m venv .venv
fi
pip_install() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@"; }
pip_install "torch==2.13.0"
pip_install -c constraints.txt -e ".[test]"
if [ -n "${SFTPIPE_BENCH:-}" ]; then pip_install -c constraints.txt -e ".[bench]"; fi  # TRL and rensa, peers for bench/ only
echo "setup: ready (.venv)"
