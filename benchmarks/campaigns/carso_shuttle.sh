#!/usr/bin/env bash
# CARSO (fully connected blocks) on the shuttle table at the quick CPU budget: the tabular-shuttle PGD-AT MLP is
# trained first (quick: 5 epochs on the 36,000 rows), then carso-shuttle at the quick scale on top of it (2 epochs on
# 8,192 rows) and evaluated end to end with the preset's quick protocol (first 500 test rows, APGD-CE via the logit
# aggregation and end to end on PeeL, PGD on PeeL, all with EoT 4), one thread.
#   bash benchmarks/campaigns/carso_shuttle.sh [RUNS_DIR]
set -euo pipefail
export OMP_NUM_THREADS=1
RUNS=${1:-runs/small}
BIN=${ROBUSTLAB_BIN:-.venv/bin/robustlab}
"$BIN" train tabular-shuttle-pgd-at --scale quick --runs-dir "$RUNS" --no-progress \
  --set train.threads=1 --set train.device=cpu
"$BIN" reproduce carso-shuttle --scale quick --device cpu --runs-dir "$RUNS" --no-progress \
  --set train.threads=1 --set "train.model.kwargs.classifier=$RUNS/tabular-shuttle-pgd-at-quick"
