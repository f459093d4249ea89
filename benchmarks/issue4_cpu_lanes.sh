#!/usr/bin/env bash
# The issue-4 MNIST measurements that fitted on the 2-core CPU after the GPU time ran out (docs/results.md says
# which numbers came from here). Two lanes of one thread each; every evaluation uses the preset's quick protocol
# with fewer points: PGD-40 on the first 1000 test points, the eps sweep on 500, AutoAttack standard on 100.
#   bash benchmarks/issue4_cpu_lanes.sh            (expects H200-trained runs under runs/h200/, see docs/results.md)
set -uo pipefail
export OMP_NUM_THREADS=1
RL=".venv/bin/robustlab"
SMALL=(--set eval.n=1000 --set eval.autoattack.n=100 --set eval.eps_sweep_n=500 --no-progress)
CPU2=(--set train.epochs=2 --set train.threads=1 --runs-dir runs/cpu2)
lane1() {
  for r in udr-mnist-pgd-at udr-mnist-trades udr-mnist-mart udr-mnist-udr-pgd; do
    $RL evaluate "runs/h200/$r-quick" --device cpu "${SMALL[@]}"
  done
  $RL train adr-mnist-adv "${CPU2[@]}" --no-progress && $RL evaluate runs/cpu2/adr-mnist-adv-quick "${SMALL[@]}"
}
lane2() {
  for p in udr-mnist-udr-pgd udr-mnist-pgd-at adr-mnist-adr-adv; do
    $RL train "$p" "${CPU2[@]}" --no-progress && $RL evaluate "runs/cpu2/$p-quick" "${SMALL[@]}"
  done
}
mkdir -p runs/logs
lane1 > runs/logs/lane1.log 2>&1 &
lane2 > runs/logs/lane2.log 2>&1 &
wait
