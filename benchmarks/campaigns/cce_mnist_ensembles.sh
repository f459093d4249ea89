#!/usr/bin/env bash
# Issue 5's ensemble comparison at a reduced CPU budget (docs/results.md): the cce-mnist quick presets (ADV, ADV-EN,
# ADP, CCE-RM, CCE-DM) on 10,000 training images for 2 epochs, fp32, one thread; evaluated on the ensemble output
# with the preset's PGD-40 and MIM-40 on the first EVAL_N (default 1,000) test points and AutoAttack standard on the
# first 100. ADV and ADV-EN ran with 1,000, ADP and CCE with EVAL_N=500 (CPU time).
#   [EVAL_N=500] bash benchmarks/issue5_cpu_lane.sh [VARIANT...]
set -uo pipefail
export OMP_NUM_THREADS=1
SMALL=(--scale quick --device cpu --runs-dir runs/small --no-progress --set train.threads=1 --set train.bf16=false
       --set train.data.train_subset=10000 --set train.epochs=2 --set eval.n=${EVAL_N:-1000} --set eval.autoattack.n=100)
mkdir -p runs/logs
variants=("$@"); [ ${#variants[@]} -eq 0 ] && variants=(adv adv-en adp rm dm)
for v in "${variants[@]}"; do .venv/bin/robustlab reproduce "cce-mnist-$v" "${SMALL[@]}"; done
# Then (docs/results.md): the entropy detector on CCE-DM and the transferability matrix of CCE-RM, first 500 points
#   .venv/bin/robustlab detect runs/small/cce-mnist-dm-quick --eps 0.1,0.2,0.3 --attacks pgd,mim --steps 40 --n 500
#   .venv/bin/robustlab transfer runs/small/cce-mnist-rm-quick --eps 0.3 --steps 20 --n 500
