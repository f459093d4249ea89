#!/usr/bin/env bash
# Ensemble training methods on MNIST at the reduced CPU budget (docs/results.md): the cce-mnist presets (ADV, ADV-EN,
# ADP, CCE-RM, CCE-DM) at the reduced scale but for 2 epochs, one thread; evaluated on the ensemble output with the
# preset's PGD-40 and MIM-40 on the first EVAL_N (default 1,000) test points and AutoAttack standard on the first
# 100 (the reduced scale drops AutoAttack; it is put back here on 100 points). ADV and ADV-EN ran with EVAL_N=1000,
# ADP and CCE with EVAL_N=500 (CPU time). Runs land in runs/small/cce-mnist-<variant>-reduced.
#   [EVAL_N=500] bash benchmarks/campaigns/cce_mnist_ensembles.sh [VARIANT...]
set -uo pipefail
export OMP_NUM_THREADS=1
SMALL=(--scale reduced --device cpu --runs-dir runs/small --no-progress --set train.threads=1 --set train.epochs=2
       --set eval.n=${EVAL_N:-1000} --set "eval.autoattack={version: standard, norm: linf, eps: 0.3, n: 100}")
variants=("$@"); [ ${#variants[@]} -eq 0 ] && variants=(adv adv-en adp rm dm)
for v in "${variants[@]}"; do .venv/bin/robustlab reproduce "cce-mnist-$v" "${SMALL[@]}"; done
# Then (docs/results.md): the entropy detector on CCE-DM and the transferability matrix of CCE-RM, first 500 points
#   .venv/bin/robustlab detect runs/small/cce-mnist-dm-reduced --eps 0.1,0.2,0.3 --attacks pgd,mim --steps 40 --n 500
#   .venv/bin/robustlab transfer runs/small/cce-mnist-rm-reduced --eps 0.3 --steps 20 --n 500
