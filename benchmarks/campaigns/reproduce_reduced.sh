#!/usr/bin/env bash
# Presets reproduced at the reduced scale on the 2-core CPU (docs/results.md): `robustlab reproduce PRESET --scale
# reduced`, i.e. the quick recipe on the first 10,000 training images for 3 epochs in fp32, evaluated with the
# preset's protocol on the first 1,000 test points (its eps sweep on the first 500) without AutoAttack. Each argument
# is one single-thread lane: a space-separated list of presets run in order (so the two sides of a pair share a
# lane's load). Arguments after `--` go to every run (settings that differ from the preset, e.g. a run name).
# Runs land in runs/small/<preset>-reduced, logs in runs/logs/reduced-<first preset of the lane>.log.
#   bash benchmarks/campaigns/reproduce_reduced.sh "udr-mnist-pgd-at udr-mnist-udr-pgd" "adr-mnist-adv adr-mnist-adr-adv"
#   bash benchmarks/campaigns/reproduce_reduced.sh adr-mnist-adr-adv -- --set train.name=NAME --set ...
set -uo pipefail
export OMP_NUM_THREADS=1
lanes=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do lanes+=("$1"); shift; done
[ $# -gt 0 ] && shift  # the --; what is left goes to every run
if [ ${#lanes[@]} -eq 0 ]; then
  echo "usage: $0 \"PRESET [PRESET...]\" [\"PRESET...\" ...] [-- ROBUSTLAB_ARGS...]" >&2; exit 2
fi
COMMON=(--scale reduced --device cpu --runs-dir runs/small --no-progress --set train.threads=1)
mkdir -p runs/logs
for lane in "${lanes[@]}"; do
  read -r -a presets <<< "$lane"
  log="runs/logs/reduced-${presets[0]}.log"
  echo "lane ${presets[*]} -> $log"
  (for p in "${presets[@]}"; do .venv/bin/robustlab reproduce "$p" "${COMMON[@]}" "$@"; done) > "$log" 2>&1 &
done
wait
