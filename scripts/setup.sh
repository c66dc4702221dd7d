#!/usr/bin/env bash
# Install everything stochastic-shield needs on Debian 12 with Python 3.11 (run as root).
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh [--test|--edge]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

APT_PACKAGES=(
  dataset-fashion-mnist     # the embedded default data set (idx files in /usr/share/datasets)
  fonts-dejavu-core         # glyphs-ood (glyphs.py) and the text lines of the ONNX corpus's OCR models
  g++-aarch64-linux-gnu     # cross compiler for rasp4b64 / aarch64 boards
  g++-arm-linux-gnueabihf   # cross compiler for rasp3b (32-bit armv7)
  qemu-user-static          # runs the emulated aarch64 board
)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

extras="peers"
[ "${1:-}" = "--test" ] && extras="peers,test,corpus"
echo "setup: pip install -e .[$extras]"
PIP_BREAK_SYSTEM_PACKAGES=1 "$PY" -m pip install -q --disable-pip-version-check -e ".[$extras]"
"$PY" -c "import tvm, tvm_ffi, torch; assert tvm_ffi.__version__.startswith('0.1.14'), tvm_ffi.__version__" \
  || { echo "setup: TVM/torch import check failed" >&2; exit 1; }
if [ "${1:-}" = "--edge" ]; then  # benchmarks/speed.py's peers (LiteRT, ExecuTorch) in .edge/ venvs
  bash scripts/setup_edge.sh
fi
echo "setup: done"
