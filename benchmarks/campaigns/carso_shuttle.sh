#!/usr/bin/env bash
# CARSO (fully connected blocks) on the shuttle table, one thread: the tabular-shuttle PGD-AT MLP is trained first
# (quick: 5 epochs on the 36,000 rows) and evaluated alone on the first N test rows (its preset's protocol), then
# carso-shuttle at SCALE on top of it (quick: 2 epochs on 8,192 rows, 20-step attacks with EoT 4; paper: 30 epochs on
# the 36,000 rows, APGD-CE-100 / PGD-200 with EoT 20 and the classifier-only protocol) is evaluated end to end on the
# same rows; last, plain and balanced accuracy of both (7% of the rows are anomalies).
#   bash benchmarks/campaigns/carso_shuttle.sh [RUNS_DIR] [SCALE]   (N=500 by default)
set -euo pipefail
export OMP_NUM_THREADS=1
RUNS=${1:-runs/small}
SCALE=${2:-quick}
N=${N:-500}
BIN=${ROBUSTLAB_BIN:-.venv/bin/robustlab}
PY=${ROBUSTLAB_PYTHON:-.venv/bin/python}
CLF="$RUNS/tabular-shuttle-pgd-at-quick"
"$BIN" train tabular-shuttle-pgd-at --scale quick --runs-dir "$RUNS" --no-progress \
  --set train.threads=1 --set train.device=cpu
"$BIN" evaluate "$CLF" --n "$N" --no-progress --store "$RUNS/results.sqlite"
"$BIN" reproduce carso-shuttle --scale "$SCALE" --device cpu --runs-dir "$RUNS" --no-progress \
  --set train.threads=1 --set "train.model.kwargs.classifier=$CLF" --set "eval.n=$N"
"$PY" benchmarks/campaigns/carso_shuttle_balanced.py "$CLF" "$RUNS/carso-shuttle-$SCALE"
