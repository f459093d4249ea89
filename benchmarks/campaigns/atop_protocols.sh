#!/usr/bin/env bash
# AToP on the CPU (docs/results.md): an AToP preset at quick scale for RT1, RT2 and RT3 in front of a trained
# classifier, protocols A (APGD-CE + APGD-DLR with EoT, end to end) and B (BPDA), each with the pre-trained and the
# fine-tuned purifier. One thread. Defaults: atop-mnist in front of the PGD-AT C&W CNN trained on the H200.
#   bash benchmarks/campaigns/atop_protocols.sh [PRESET [CLASSIFIER_RUN [TRANSFORM...]]]
set -uo pipefail
export OMP_NUM_THREADS=1
PRESET=${1:-atop-mnist}; shift || true
CLF=${1:-runs/h200/udr-mnist-pgd-at-quick}; shift || true
transforms=("$@"); [ ${#transforms[@]} -eq 0 ] && transforms=(rt1 rt2 rt3)
for rt in "${transforms[@]}"; do
  .venv/bin/robustlab atop "$PRESET" --classifier "$CLF" --transform "$rt" --runs-dir runs/small --no-progress \
    --set "eval.protocols=[A,B]"
done
