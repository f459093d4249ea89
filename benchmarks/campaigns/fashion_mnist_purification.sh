#!/usr/bin/env bash
# Fashion-MNIST at the reduced CPU budget (docs/results.md), one thread throughout:
#  1. the PGD-AT C&W CNN (fashion-mnist-pgd-at at the reduced scale but on 20,000 images: 3 epochs, fp32, eps 0.1,
#     its protocol on the first 1,000 test points);
#  2. CARSO on it (carso-fashion-mnist at the reduced scale: 10,000 images, 3 epochs), evaluated end to end on 200
#     points with the quick protocol without its AutoAttack rand run (APGD-CE/DLR via the logit surrogate, PGD-EoT
#     through PeeL, eps 0.95 sanity check);
#  3. AToP RT1/RT2/RT3 in front of the same classifier, protocols A and B (atop_protocols.sh);
#  4. AutoAttack standard on the classifier alone, first 500 points (autoattack_first500.sh).
#   bash benchmarks/campaigns/fashion_mnist_purification.sh [SKIP_CLASSIFIER=0]
set -uo pipefail
export OMP_NUM_THREADS=1
RL=.venv/bin/robustlab
HERE=$(dirname "$0")
CLF=runs/small/fashion-mnist-pgd-at-reduced
COMMON=(--scale reduced --device cpu --runs-dir runs/small --no-progress --set train.threads=1)
if [ "${1:-0}" != 1 ]; then
  $RL reproduce fashion-mnist-pgd-at "${COMMON[@]}" --set train.data.train_subset=20000
fi
$RL reproduce carso-fashion-mnist "${COMMON[@]}" --set "train.model.kwargs.classifier=$CLF" \
  --set eval.n=200 --set eval.autoattack=null
bash "$HERE/atop_protocols.sh" atop-fashion-mnist "$CLF"
bash "$HERE/autoattack_first500.sh" standard "$CLF"
