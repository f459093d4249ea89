#!/usr/bin/env bash
# The issue-4 MNIST measurements that fitted on the 2-core CPU after the GPU time ran out (docs/results.md says
# which numbers came from here): the six H200-trained UDR-table models evaluated with the preset's PGD-40 on the
# first 1000 test points and its eps sweep on the first 500, without AutoAttack (which did not fit). Two lanes of
# one thread each.
#   bash benchmarks/issue4_cpu_lanes.sh            (expects the H200-trained runs under runs/h200/)
set -uo pipefail
export OMP_NUM_THREADS=1
RL=".venv/bin/robustlab"
SMALL=(--device cpu --set eval.n=1000 --set eval.autoattack=null --set eval.eps_sweep_n=500 --no-progress)
lane1() {
  for r in udr-mnist-pgd-at udr-mnist-trades udr-mnist-mart; do $RL evaluate "runs/h200/$r-quick" "${SMALL[@]}"; done
}
lane2() {
  for r in udr-mnist-udr-pgd udr-mnist-udr-trades udr-mnist-udr-mart; do
    $RL evaluate "runs/h200/$r-quick" "${SMALL[@]}"
  done
}
mkdir -p runs/logs
lane1 > runs/logs/lane1.log 2>&1 &
lane2 > runs/logs/lane2.log 2>&1 &
wait
