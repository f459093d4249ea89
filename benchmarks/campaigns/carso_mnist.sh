#!/usr/bin/env bash
# CARSO on MNIST at the reduced CPU budget (docs/results.md): carso-mnist at the reduced scale (10,000 training images,
# 3 epochs) on top of the PGD-AT C&W CNN trained on the H200, one thread; evaluated end to end with the preset's
# quick protocol, which the reduced scale keeps (first 100 test points; PGD-EoT and AutoAttack rand with reduced
# steps / EoT). The run lands in runs/small/carso-mnist-reduced.
#   bash benchmarks/campaigns/carso_mnist.sh [CLASSIFIER_RUN]
set -uo pipefail
export OMP_NUM_THREADS=1
CLF=${1:-runs/h200/udr-mnist-pgd-at-quick}
.venv/bin/robustlab reproduce carso-mnist --scale reduced --device cpu --runs-dir runs/small --no-progress \
  --set train.threads=1 --set "train.model.kwargs.classifier=$CLF"
