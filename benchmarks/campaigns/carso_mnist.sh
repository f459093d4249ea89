#!/usr/bin/env bash
# Issue 6's CARSO measurement at a reduced CPU budget (docs/results.md): carso-mnist at quick scale on top of the
# PGD-AT C&W CNN trained on the H200 (runs/h200/udr-mnist-pgd-at-quick), 10,000 training images for 3 epochs, one
# thread; evaluated end to end with the quick protocol (PGD-EoT and AutoAttack rand with reduced steps / EoT).
#   bash benchmarks/issue6_carso_lane.sh [CLASSIFIER_RUN]
set -uo pipefail
export OMP_NUM_THREADS=1
CLF=${1:-runs/h200/udr-mnist-pgd-at-quick}
.venv/bin/robustlab reproduce carso-mnist --scale quick --device cpu --runs-dir runs/small --no-progress \
  --set train.threads=1 --set "train.model.kwargs.classifier=$CLF" \
  --set train.data.train_subset=10000 --set train.epochs=3
