#!/usr/bin/env bash
# Issue 4's "PGD-40 on the full test set" for the reduced-budget runs: each run's own protocol (the preset's PGD-40,
# step 0.01, plus the eps-0.5 sanity check) on all 10,000 MNIST test points, no sweep, no AutoAttack. Two
# single-thread lanes, runs alternated between them; logs in runs/logs/full-pgd-<lane>.log.
#   bash benchmarks/issue4_full_test_pgd.sh RUN...
set -uo pipefail
export OMP_NUM_THREADS=1
runs=("$@")
lane() {  # lane FIRST_INDEX
  for ((i = $1; i < ${#runs[@]}; i += 2)); do
    .venv/bin/robustlab evaluate "${runs[$i]}" --n 10000 --no-progress --device cpu \
      --set "eval.eps_sweep=[]" --set eval.autoattack=null
  done
}
mkdir -p runs/logs
lane 0 > runs/logs/full-pgd-0.log 2>&1 &
lane 1 > runs/logs/full-pgd-1.log 2>&1 &
wait
