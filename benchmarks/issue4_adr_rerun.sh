#!/usr/bin/env bash
# ADR-ADV re-run with the scaled global term (gb_scale: max) at the reduced budget of issue4_small_pairs.sh, so it
# pairs with the ADV run there (10,000 images, 3 epochs, PGD-40 on 1,000 test points, eps sweep on 500).
#   bash benchmarks/issue4_adr_rerun.sh [PRESET [--set ...]]
set -uo pipefail
export OMP_NUM_THREADS=1
SMALL=(--scale quick --device cpu --runs-dir runs/small --no-progress --set train.threads=1 --set train.bf16=false
       --set train.data.train_subset=10000 --set train.epochs=3 --set eval.n=1000 --set eval.autoattack=null
       --set eval.eps_sweep_n=500)
PRESET=${1:-adr-mnist-adr-adv}; shift || true
.venv/bin/robustlab reproduce "$PRESET" "${SMALL[@]}" "$@"
# Diagnostic (docs/results.md): the same ADR-ADV with the thesis's optimizer (SGD lr 0.01, momentum 0.9, constant)
#   bash benchmarks/issue4_adr_rerun.sh adr-mnist-adr-adv --set train.name=adr-mnist-adr-adv-sgd-quick \
#     --set train.optimizer.name=sgd --set train.optimizer.lr=0.01 --set train.optimizer.momentum=0.9 \
#     --set train.schedule.name=constant
