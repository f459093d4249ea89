#!/usr/bin/env bash
# Paired reduced-budget runs for issue 4's orderings on the 2-core CPU (docs/results.md): each run trains with the
# same reduced budget (the quick preset on 10,000 training images for 3 epochs, fp32 here) and is evaluated with the
# preset's PGD-40 on the first 1,000 test points and the eps sweep on the first 500. Each argument is one
# single-thread lane: a space-separated list of presets run in order (default: the PGD-AT/UDR-PGD and ADV/ADR-ADV
# pairs). Logs go to runs/logs/pairs-<first preset of the lane>.log.
#   bash benchmarks/issue4_small_pairs.sh ["udr-mnist-trades udr-mnist-udr-trades" "udr-mnist-mart udr-mnist-udr-mart"]
set -uo pipefail
export OMP_NUM_THREADS=1
SMALL=(--scale quick --device cpu --runs-dir runs/small --no-progress --set train.threads=1
       --set train.data.train_subset=10000 --set train.epochs=3 --set eval.n=1000 --set eval.autoattack=null
       --set eval.eps_sweep_n=500)
lanes=("$@"); [ ${#lanes[@]} -eq 0 ] && lanes=("udr-mnist-pgd-at udr-mnist-udr-pgd" "adr-mnist-adv adr-mnist-adr-adv")
mkdir -p runs/logs
for lane in "${lanes[@]}"; do
  read -r -a presets <<< "$lane"
  (for p in "${presets[@]}"; do .venv/bin/robustlab reproduce "$p" "${SMALL[@]}"; done) \
    > "runs/logs/pairs-${presets[0]}.log" 2>&1 &
done
wait
