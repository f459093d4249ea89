#!/usr/bin/env bash
# TA-MOO against MOO, Uniform and MinMax on the MNIST C&W CNNs trained on the H200 for the UDR table
# (docs/results.md), one thread, the paper's attack budget (100 steps of eps/4 at eps 0.3):
#  * ENS: the four members PGD-AT, TRADES, MART and UDR-TRADES as one ensemble, first 200 test points;
#  * UNI: one perturbation per group of 4 images on PGD-AT, first 200 points;
#  * EoT: the 7 transformations as tasks on PGD-AT, first 50 points.
# H is the folder of the H200 runs, named as they were trained: udr-mnist-mart-quick is MART in the thesis's printed
# form (today's row udr-mnist-mart-printed) and udr-mnist-udr-trades-quick used the thesis's L-inf pull cost.
# Results: benchmarks/results/tamoo_{ens,uni,eot}_mnist.json.
#   [H=runs/h200] bash benchmarks/campaigns/tamoo_mnist_tables.sh
set -uo pipefail
export OMP_NUM_THREADS=1
PY=.venv/bin/python; H=${H:-runs/h200}
TABLES=benchmarks/campaigns/tamoo_attack_tables.py
mkdir -p benchmarks/results
$PY $TABLES --table ens --n 200 --out benchmarks/results/tamoo_ens_mnist.json \
  --victim-runs $H/udr-mnist-pgd-at-quick $H/udr-mnist-trades-quick $H/udr-mnist-mart-quick $H/udr-mnist-udr-trades-quick
$PY $TABLES --table uni --n 200 --out benchmarks/results/tamoo_uni_mnist.json --victim-runs $H/udr-mnist-pgd-at-quick
$PY $TABLES --table eot --n 50 --batch-size 50 --out benchmarks/results/tamoo_eot_mnist.json \
  --victim-runs $H/udr-mnist-pgd-at-quick
