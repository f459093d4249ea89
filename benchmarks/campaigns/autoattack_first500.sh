#!/usr/bin/env bash
# Issue 4: AutoAttack's two APGD stages (APGD-CE, then APGD-T) on the first 500 test points for reduced-budget runs,
# by default the ADV / ADR-ADV pair (issue4_small_pairs.sh, issue4_adr_rerun.sh); docs/results.md also runs it on the
# TRADES / ADR-TRADES and PGD-AT / UDR-PGD pairs. One thread.
#   bash benchmarks/issue4_aa_adr.sh [RUN...]
set -uo pipefail
export OMP_NUM_THREADS=1
runs=("$@"); [ ${#runs[@]} -eq 0 ] && runs=(runs/small/adr-mnist-adv-quick runs/small/adr-mnist-adr-adv-nosg-quick)
for run in "${runs[@]}"; do
  .venv/bin/robustlab evaluate "$run" --protocol autoattack-custom --set "eval.autoattack.attacks=[apgd-ce,apgd-t]" \
    --n 500 --no-progress --device cpu --set "eval.eps_sweep=[]"
done
