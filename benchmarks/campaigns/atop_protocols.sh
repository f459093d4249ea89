#!/usr/bin/env bash
# Issue 6's AToP measurement on the CPU (docs/results.md): atop-mnist at quick scale for RT1, RT2 and RT3 in front of
# the PGD-AT C&W CNN trained on the H200, protocols A (APGD-CE + APGD-DLR with EoT, end to end) and B (BPDA), each
# with the pre-trained and the fine-tuned purifier. One thread.
#   bash benchmarks/issue6_atop_lane.sh [CLASSIFIER_RUN] [TRANSFORM...]
set -uo pipefail
export OMP_NUM_THREADS=1
CLF=${1:-runs/h200/udr-mnist-pgd-at-quick}; shift || true
transforms=("$@"); [ ${#transforms[@]} -eq 0 ] && transforms=(rt1 rt2 rt3)
for rt in "${transforms[@]}"; do
  .venv/bin/robustlab atop atop-mnist --classifier "$CLF" --transform "$rt" --runs-dir runs/small --no-progress \
    --set "eval.protocols=[A,B]"
done
