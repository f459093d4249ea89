#!/usr/bin/env bash
# AutoAttack on the first 500 test points of trained runs, on the CPU, one thread, without the eps sweep
# (docs/results.md). `apgd`: AutoAttack's two APGD stages (APGD-CE, then APGD-T on what survives; FAB-T and Square
# left out); `standard`: the whole of AutoAttack standard. Resumable: the state is kept in each run's eval folder.
#   bash benchmarks/campaigns/autoattack_first500.sh apgd|standard RUN...
set -uo pipefail
export OMP_NUM_THREADS=1
mode=${1:-}; shift || true
case $mode in
  apgd) protocol=(--protocol autoattack-custom --set "eval.autoattack.attacks=[apgd-ce,apgd-t]") ;;
  standard) protocol=(--protocol autoattack-standard) ;;
  *) protocol=() ;;
esac
if [ ${#protocol[@]} -eq 0 ] || [ $# -eq 0 ]; then echo "usage: $0 apgd|standard RUN..." >&2; exit 2; fi
for run in "$@"; do
  .venv/bin/robustlab evaluate "$run" "${protocol[@]}" --n 500 --no-progress --device cpu --set "eval.eps_sweep=[]"
done
