#!/usr/bin/env bash
# Attack-only measurements on trained runs (docs/results.md), one thread:
#  * issue 5: TA-MOO vs MOO / Uniform / MinMax, ENS on four H200-trained MNIST C&W CNNs (PGD-AT, TRADES, MART,
#    UDR-TRADES), UNI (groups of 4) and EoT (the 7 transformations) on the PGD-AT one; 100 steps of eps/4, eps 0.3.
#  * issues 4 and 6: AutoAttack standard on 500 test points for the H200 PGD-AT classifier (CARSO's classifier and
#    the UDR table's PGD-AT row) and for the reduced-budget PGD-AT / UDR-PGD pair of issue4_small_pairs.sh.
#   bash benchmarks/issue45_attack_lane.sh
set -uo pipefail
export OMP_NUM_THREADS=1
PY=.venv/bin/python; H=runs/h200
mkdir -p benchmarks/results
$PY benchmarks/tamoo_table.py --table ens --n 200 --out benchmarks/results/tamoo_ens_mnist.json \
  --victim-runs $H/udr-mnist-pgd-at-quick $H/udr-mnist-trades-quick $H/udr-mnist-mart-quick $H/udr-mnist-udr-trades-quick
$PY benchmarks/tamoo_table.py --table uni --n 200 --out benchmarks/results/tamoo_uni_mnist.json \
  --victim-runs $H/udr-mnist-pgd-at-quick
aa() { .venv/bin/robustlab evaluate "$1" --protocol autoattack-standard --n 500 --set "eval.eps_sweep=[]" \
         --no-progress --device cpu; }
aa $H/udr-mnist-pgd-at-quick
$PY benchmarks/tamoo_table.py --table eot --n 100 --out benchmarks/results/tamoo_eot_mnist.json \
  --victim-runs $H/udr-mnist-pgd-at-quick
aa runs/small/udr-mnist-pgd-at-quick
aa runs/small/udr-mnist-udr-pgd-quick
