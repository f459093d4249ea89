#!/usr/bin/env bash
# Trained runs evaluated with their own protocol (the preset's attacks, e.g. PGD-40 at step 0.01, its eps sweep and
# the large-eps check) without AutoAttack, on the CPU (docs/results.md). Two single-thread lanes, runs alternated
# between them; logs in runs/logs/own-protocol-<mode>-<lane>.log.
#   first1000  the first 1,000 test points, the eps sweep on the first 500 (the reduced scale's evaluation budget)
#   full-test  all 10,000 MNIST test points, no eps sweep
#   bash benchmarks/campaigns/own_protocol.sh first1000|full-test RUN...
set -uo pipefail
export OMP_NUM_THREADS=1
mode=${1:-}; shift || true
case $mode in
  first1000) budget=(--set eval.n=1000 --set eval.eps_sweep_n=500) ;;
  full-test) budget=(--n 10000 --set "eval.eps_sweep=[]") ;;
  *) budget=() ;;
esac
if [ ${#budget[@]} -eq 0 ] || [ $# -eq 0 ]; then echo "usage: $0 first1000|full-test RUN..." >&2; exit 2; fi
runs=("$@")
lane() {  # lane FIRST_INDEX
  for ((i = $1; i < ${#runs[@]}; i += 2)); do
    .venv/bin/robustlab evaluate "${runs[$i]}" "${budget[@]}" --set eval.autoattack=null --no-progress --device cpu
  done
}
mkdir -p runs/logs
lane 0 > "runs/logs/own-protocol-$mode-0.log" 2>&1 &
lane 1 > "runs/logs/own-protocol-$mode-1.log" 2>&1 &
wait
