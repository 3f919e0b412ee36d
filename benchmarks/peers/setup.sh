#!/usr/bin/env bash
# Throwaway virtual environments for the peer benchmarks (benchmarks/peers/run.py); none of these
# packages is a project dependency, and nothing here touches the project's own venv.
#
#   bash benchmarks/peers/setup.sh [DIR]     # DIR defaults to /tmp/cgmlp_peers
#
# DIR/gmlp_pytorch  torch 2.13.0 (CPU build) + g-mlp-pytorch (lucidrains)
# DIR/timm          torch 2.14.1 + torchvision 0.29.1 + timm (its gMLP: timm.models.mlp_mixer)
# DIR/keras         tensorflow-cpu + keras, the same versions as the project venv
#
# torch is pinned to 2.13.0: on the project's machines pip takes that CPU build from local disk,
# where plain `torch` (or a package asking for it) pulls a CUDA build of several GB. timm imports
# torchvision (timm.layers, at import), and no torchvision from PyPI loads beside that CPU build
# ("operator torchvision::nms does not exist", tried with 0.28.0), so the timm venv takes
# torch 2.14.1 + torchvision 0.29.1 instead, which pip takes from the same local disk on x86_64
# with Python 3.11 (a CUDA build, ~5.5 GB in the venv; it computes on the CPU here). Elsewhere set
# TIMM_TORCH to what fits, e.g. TIMM_TORCH="torch==2.9.1 torchvision==0.24.1" on aarch64.
# An existing venv that already imports its packages is left as it is.
# PYTHON picks the interpreter (default: python3; torch 2.13.0's local build is for Python 3.11).
set -euo pipefail

DIR="${1:-/tmp/cgmlp_peers}"
PYTHON="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT_PY="${PROJECT_PY:-$HERE/../../.venv/bin/python}"
TORCH="torch==2.13.0"
TIMM_TORCH="${TIMM_TORCH:-torch==2.14.1 torchvision==0.29.1}"
mkdir -p "$DIR"

# The TensorFlow and Keras versions of the project venv, where there is one.
TF_PIN="tensorflow-cpu" KERAS_PIN="keras"
if [ -x "$PROJECT_PY" ]; then
  TF_V="$("$PROJECT_PY" -c 'import importlib.metadata as m; print(m.version("tensorflow-cpu"))' 2>/dev/null || true)"
  KERAS_V="$("$PROJECT_PY" -c 'import importlib.metadata as m; print(m.version("keras"))' 2>/dev/null || true)"
  [ -n "$TF_V" ] && TF_PIN="tensorflow-cpu==$TF_V"
  [ -n "$KERAS_V" ] && KERAS_PIN="keras==$KERAS_V"
fi

make_venv() {  # NAME IMPORT-CHECK PIP-ARGS...; each PIP-ARGS word is one `pip install` call
  local name="$1" check="$2"; shift 2
  local venv="$DIR/$name"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    echo "== $name: ready ($venv)"; return
  fi
  echo "== $name: creating $venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  local args
  for args in "$@"; do
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install -q $args
  done
  "$venv/bin/python" -c "$check"
}

make_venv gmlp_pytorch "import torch, g_mlp_pytorch, numpy" \
  "$TORCH" "g-mlp-pytorch numpy $TORCH"
make_venv timm "import torch, timm.models.mlp_mixer" \
  "$TIMM_TORCH" "timm $TIMM_TORCH"
make_venv keras "import tensorflow, keras" \
  "$TF_PIN $KERAS_PIN"

for name in gmlp_pytorch timm keras; do
  "$DIR/$name/bin/python" - "$name" <<'PY'
import importlib.metadata as m, sys
pkgs = {"gmlp_pytorch": ("torch", "g-mlp-pytorch", "einops", "numpy"), "timm": ("torch", "torchvision", "timm"),
        "keras": ("tensorflow-cpu", "keras")}[sys.argv[1]]
print(f"   {sys.argv[1]}: " + ", ".join(f"{p} {m.version(p)}" for p in pkgs))
PY
done
du -sh "$DIR"/* 2>/dev/null || true
