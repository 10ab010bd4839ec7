# Device run: GPU tests, then the MRPC recipe rows over seeds (tools/gpu/make_params.py), all runs at once.
#   bash tools/gpu/run.sh <python> <rows folder> <seconds for everything> [epochs scale] [max train rows]
set -u
PY=$1; ROOT=$2; BUDGET=$3; OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
T0=$(date +%s)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 DVCLIVE_OPEN=false
if [ -n "${DEVICE:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD/tools/gpu/stubs:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
else
  export PYTHONPATH=$PWD/tools/gpu/stubs:$PWD
fi
$PY -c "import torch, transformers, neural_compressor, numpy, accelerate, dvclive; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '', 'transformers', transformers.__version__, 'inc', neural_compressor.__version__, 'numpy', numpy.__version__, 'accelerate', accelerate.__version__, 'dvclive', dvclive.__file__)" || exit 4
[ -f gpu/model/model.safetensors ] || $PY tools/gpu/unpack_model.py gpu/model || exit 5
$PY tools/gpu/make_params.py "$ROOT" ${4:-1} ${5:-} || exit 6
($PY -m pytest -q -p no:cacheprovider tests/test_gpu_training.py > "$OUT/pytest_gpu.log" 2>&1; echo "rc $?" >> "$OUT/pytest_gpu.log") &
{ $PY -m pipeline.data "$ROOT/params.yaml" && $PY -m pipeline.teacher "$ROOT/params.yaml"; } > "$OUT/teacher.log" 2>&1 || { tail -40 "$OUT/teacher.log"; exit 7; }
tail -3 "$OUT/teacher.log"
LEFT=$(( BUDGET - ($(date +%s) - T0) - 40 ))
echo "teacher done at $(( $(date +%s) - T0 )) s; runs get $LEFT s"
$PY tools/gpu/harness.py "$ROOT" "$LEFT" > "$OUT/harness.log" 2>&1; echo "harness rc $?"
tail -25 "$OUT/harness.log"
wait
cat "$OUT/pytest_gpu.log" | tail -5
tar czf "$OUT/results.tgz" --exclude='*.safetensors' --exclude='*.pt' --exclude='*.bin' "$ROOT"
echo "total $(( $(date +%s) - T0 )) s"
