#!/usr/bin/env bash
# ADR supp Table 4 on the reduced-budget ADV and ADR-ADV runs (issue4_small_pairs.sh, issue4_adr_rerun.sh): each
# model under PGD, BIM and MIM (40 steps at the quick scale), each followed by multi-targeted PGD on what survives,
# first N test points (default 500). The s4 presets of one method train the same model, so they are only evaluated
# here. Two single-thread lanes (ADV, ADR-ADV); logs in runs/logs/s4-*.log.
#   bash benchmarks/issue4_s4.sh [N]
set -uo pipefail
export OMP_NUM_THREADS=1
n=${1:-500}
lane() {  # lane RUN METHOD
  for attack in pgd bim mim; do
    .venv/bin/robustlab evaluate "$1" --preset "adr-mnist-s4-$2-$attack" --n "$n" --no-progress --device cpu \
      --set "eval.eps_sweep=[]" --set eval.autoattack=null
  done
}
mkdir -p runs/logs
lane runs/small/adr-mnist-adv-quick adv > runs/logs/s4-adv.log 2>&1 &
lane runs/small/adr-mnist-adr-adv-nosg-quick adr > runs/logs/s4-adr.log 2>&1 &
wait
