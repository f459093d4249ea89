#!/usr/bin/env bash
# Train presets on a CUDA machine, evaluate each with its own protocol and with AutoAttack, pack the results.
# Usage (on the lent GPU machine, from the repo root; see docs/results.md for what was run):
#   bash benchmarks/device/run_presets.sh "demo mnist-pgd-at" quick 500 [extra train args...]
# Offline inputs it expects beside the repo (ignored by git): .whl/ (pydantic wheels for the machine's Python),
# .devdata/ (the robustlab npz dataset caches), .devpkg/ (pyautoattack's sources, for the reference comparison).
set -uo pipefail
presets=$1; scale=$2; aa_n=$3; shift 3
out=${OUT:-/tmp/out}; mkdir -p "$out"
PY=${PYTHON:-python3}
if ! $PY -c "import pydantic" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=$PWD:$PWD/.devpkg:/tmp/site PYTHONUNBUFFERED=1 ROBUSTLAB_DATA_DIR=$PWD/.devdata
nvidia-smi -L 2>/dev/null; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
log=$out/log.txt
for p in $presets; do
  start=$(date +%s)
  $PY -m robustlab.cli train "$p" --scale "$scale" --evaluate --no-progress --runs-dir runs "$@" 2>&1 | tee -a "$log"
  echo "TIMING train+eval $p $(( $(date +%s) - start )) s" | tee -a "$log"
  run=$(ls -td runs/*/ | head -1)
  if [ "$aa_n" -gt 0 ]; then
    start=$(date +%s)
    $PY -m robustlab.cli evaluate "$run" --protocol autoattack-standard --n "$aa_n" --no-progress 2>&1 | tee -a "$log"
    echo "TIMING autoattack $p $(( $(date +%s) - start )) s" | tee -a "$log"
  fi
  tar czf "$out/runs.tgz" --exclude='*.safetensors' --exclude='*.state.*' runs  # after each preset: a timeout keeps what ran
done
