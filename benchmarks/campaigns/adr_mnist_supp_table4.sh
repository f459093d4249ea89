#!/usr/bin/env bash
# ADR supp Table 4 on a reduced-scale ADV / ADR-ADV pair (reproduce_reduced.sh "adr-mnist-adv adr-mnist-adr-adv"):
# each model under PGD, BIM and MIM (40 steps of 0.01), each followed by multi-targeted PGD on what survives, first
# N test points (default 500), eps 0.3. The s4 presets of one method train the same model, so they only evaluate
# here (`--preset adr-mnist-s4-*`). Two single-thread lanes (ADV, ADR-ADV); logs in runs/logs/s4-*.log.
#   bash benchmarks/campaigns/adr_mnist_supp_table4.sh [N] [ADV_RUN ADR_ADV_RUN]
set -uo pipefail
export OMP_NUM_THREADS=1
n=${1:-500}
adv=${2:-runs/small/adr-mnist-adv-reduced}
adr=${3:-runs/small/adr-mnist-adr-adv-reduced}
lane() {  # lane RUN METHOD
  for attack in pgd bim mim; do
    .venv/bin/robustlab evaluate "$1" --preset "adr-mnist-s4-$2-$attack" --n "$n" --no-progress --device cpu \
      --set "eval.eps_sweep=[]" --set eval.autoattack=null
  done
}
mkdir -p runs/logs
lane "$adv" adv > runs/logs/s4-adv.log 2>&1 &
lane "$adr" adr > runs/logs/s4-adr.log 2>&1 &
wait
