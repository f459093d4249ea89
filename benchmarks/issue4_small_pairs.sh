#!/usr/bin/env bash
# Paired reduced-budget runs for issue 4's orderings on the 2-core CPU (docs/results.md): each pair trains with the
# same reduced budget (the quick preset on 10,000 training images for 3 epochs, fp32 here) and is evaluated with the
# preset's PGD-40 on the first 1,000 test points and the eps sweep on the first 500. Two single-thread lanes.
#   bash benchmarks/issue4_small_pairs.sh
set -uo pipefail
export OMP_NUM_THREADS=1
SMALL=(--scale quick --device cpu --runs-dir runs/small --no-progress --set train.threads=1
       --set train.data.train_subset=10000 --set train.epochs=3 --set eval.n=1000 --set eval.autoattack=null
       --set eval.eps_sweep_n=500)
mkdir -p runs/logs
(for p in udr-mnist-pgd-at udr-mnist-udr-pgd; do .venv/bin/robustlab reproduce "$p" "${SMALL[@]}"; done) \
  > runs/logs/pairs-udr.log 2>&1 &
(for p in adr-mnist-adv adr-mnist-adr-adv; do .venv/bin/robustlab reproduce "$p" "${SMALL[@]}"; done) \
  > runs/logs/pairs-adr.log 2>&1 &
wait
