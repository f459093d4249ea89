#!/usr/bin/env bash
# ADR-ADV re-run with the scaled global term (gb_scale: max) at the reduced budget of issue4_small_pairs.sh, so it
# pairs with the ADV run there (10,000 images, 3 epochs, PGD-40 on 1,000 test points, eps sweep on 500).
#   bash benchmarks/issue4_adr_rerun.sh [PRESET...]
set -uo pipefail
export OMP_NUM_THREADS=1
SMALL=(--scale quick --device cpu --runs-dir runs/small --no-progress --set train.threads=1 --set train.bf16=false
       --set train.data.train_subset=10000 --set train.epochs=3 --set eval.n=1000 --set eval.autoattack=null
       --set eval.eps_sweep_n=500)
presets=("$@"); [ ${#presets[@]} -eq 0 ] && presets=(adr-mnist-adr-adv)
for p in "${presets[@]}"; do .venv/bin/robustlab reproduce "$p" "${SMALL[@]}"; done
