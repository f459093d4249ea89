#!/usr/bin/env bash
# Issue 6 on Fashion-MNIST at a reduced CPU budget (docs/results.md), one thread throughout:
#  1. the PGD-AT C&W CNN (fashion-mnist-pgd-at, quick, 20,000 images, 3 epochs, eps 0.1);
#  2. CARSO on it (carso-fashion-mnist, quick, 10,000 images, 3 epochs), evaluated end to end on 200 points with the
#     quick protocol (APGD-CE/DLR via the logit surrogate, PGD-EoT through PeeL, eps 0.95 sanity check);
#  3. AToP RT1/RT2/RT3 in front of the same classifier, protocols A and B;
#  4. AutoAttack standard on the classifier alone, 500 points.
#   bash benchmarks/issue6_fmnist_lane.sh [SKIP_CLASSIFIER=0]
set -uo pipefail
export OMP_NUM_THREADS=1
RL=.venv/bin/robustlab
CLF=runs/small/fashion-mnist-pgd-at-quick
if [ "${1:-0}" != 1 ]; then
  $RL reproduce fashion-mnist-pgd-at --scale quick --device cpu --runs-dir runs/small --no-progress \
    --set train.threads=1 --set train.bf16=false --set train.data.train_subset=20000 --set train.epochs=3 \
    --set eval.n=1000
fi
$RL reproduce carso-fashion-mnist --scale quick --device cpu --runs-dir runs/small --no-progress \
  --set train.threads=1 --set "train.model.kwargs.classifier=$CLF" \
  --set train.data.train_subset=10000 --set train.epochs=3 --set eval.n=200 --set eval.autoattack=null
for rt in rt1 rt2 rt3; do
  $RL atop atop-fashion-mnist --classifier "$CLF" --transform "$rt" --runs-dir runs/small --no-progress \
    --set "eval.protocols=[A,B]"
done
$RL evaluate "$CLF" --protocol autoattack-standard --n 500 --no-progress --device cpu --set "eval.eps_sweep=[]"
