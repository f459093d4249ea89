#!/usr/bin/env bash
# Issue 4: AutoAttack's two APGD stages (APGD-CE, then APGD-T on what survives) on the first 500 test points for the
# reduced-budget PGD-AT / UDR-PGD pair of issue4_small_pairs.sh, then the rest of AutoAttack standard on the H200
# PGD-AT row (its saved state resumes after FAB-T). One thread. docs/results.md.
#   bash benchmarks/issue4_aa_pair.sh
set -uo pipefail
export OMP_NUM_THREADS=1
RL=.venv/bin/robustlab
for run in runs/small/udr-mnist-pgd-at-quick runs/small/udr-mnist-udr-pgd-quick; do
  $RL evaluate "$run" --protocol autoattack-custom --set "eval.autoattack.attacks=[apgd-ce,apgd-t]" --n 500 \
    --no-progress --device cpu --set "eval.eps_sweep=[]"
done
$RL evaluate runs/h200/udr-mnist-pgd-at-quick --protocol autoattack-standard --n 500 --no-progress --device cpu \
  --set "eval.eps_sweep=[]"
