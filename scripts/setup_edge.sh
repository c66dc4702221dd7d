#!/usr/bin/env bash
# The edge runtimes a Raspberry Pi user would pick instead of us, for benchmarks/speed.py, each in its own
# virtualenv so the main install is untouched (.edge/ is gitignored). Idempotent: a second run only checks.
#   .edge/run      executorch 1.5.1, LiteRT (ai-edge-litert), onnxruntime: loads and times .pte/.tflite/.onnx
#   .edge/convert  litert-torch: quantizes with PT2E and writes the int8 .tflite files (heavy: jax, transformers)
# torch is pinned to exactly 2.13.0 in both (executorch's native libraries are built against it; a range pulls
# a multi-GB CUDA torch). The same pins are the pyproject extras "edge" and "edge-convert".
# Usage: bash scripts/setup_edge.sh [run|convert]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EDGE=${EDGE_DIR:-.edge}
RUN_PKGS=(torch==2.13.0 executorch==1.5.1 ai-edge-litert==2.3.0 onnxruntime==1.32.0)
CONVERT_PKGS=(torch==2.13.0 litert-torch==0.10.0 ai-edge-litert==2.3.0)

make_venv() {  # NAME CHECK PACKAGES...
  local name=$1 check=$2; shift 2
  local venv="$EDGE/$name"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    echo "setup_edge: $venv ready"; return 0
  fi
  echo "setup_edge: $venv: pip install $*"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
  "$venv/bin/python" -c "$check" || { echo "setup_edge: $venv import check failed" >&2; exit 1; }
  echo "setup_edge: $venv ready"
}

what=${1:-all}
if [ "$what" = all ] || [ "$what" = run ]; then
  make_venv run "import torch, executorch.runtime, ai_edge_litert.interpreter, onnxruntime; assert torch.__version__.startswith('2.13.0')" \
    "${RUN_PKGS[@]}"
fi
if [ "$what" = all ] || [ "$what" = convert ]; then
  make_venv convert "import torch, litert_torch; assert torch.__version__.startswith('2.13.0')" "${CONVERT_PKGS[@]}"
fi
