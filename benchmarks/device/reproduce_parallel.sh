#!/usr/bin/env bash
# Reproduce several presets at once on one CUDA machine: one `robustlab reproduce` process per preset, all in
# parallel (small MNIST models are launch-bound, so processes overlap well on one GPU), each under a time limit,
# then pack every run folder's results (no weights) into $OUT/runs.tgz.
#   bash benchmarks/device/reproduce_parallel.sh SCALE LIMIT_S PRESET [PRESET ...]
# Offline inputs beside the repo (ignored by git): .whl/ (pydantic wheels), .devdata/ (npz dataset caches).
set -uo pipefail
scale=$1; limit=$2; shift 2
out=${OUT:-/tmp/out}; mkdir -p "$out" runs
PY=${PYTHON:-python3}
if ! $PY -c "import pydantic" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 ROBUSTLAB_DATA_DIR=$PWD/.devdata OMP_NUM_THREADS=1
nvidia-smi -L 2>/dev/null
for p in "$@"; do
  timeout "$limit" $PY -m robustlab.cli reproduce "$p" --scale "$scale" --device auto --no-progress \
    > "runs/$p.log" 2>&1 &
done
wait
tail -n 4 runs/*.log
tar czf "$out/runs.tgz" --exclude='optim-*' --exclude='last.safetensors' --exclude='*.state.*' runs  # best weights come back
