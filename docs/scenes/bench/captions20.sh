#!/usr/bin/env bash
# ETC+ with the searched schedules (`--set searched_schedules=true`) calibrated on 20 captions instead of 10:
# calibration_prompts_20.txt, the 10 calibration captions and the first 10 scenes-grammar captions at grammar
# seed 13 that are no calibration, evaluation, development or held-out caption (seed 42, a seed per caption), then
# benched on the case's evaluation images into `<case folder>-captions20`, beside the 10-caption twin of
# schedules.sh (`scripts/etc_plus_margins.py --variant captions20` reads it).
# Usage: bash docs/scenes/bench/captions20.sh SCHEDULER:STEPS ...   (50-step cases: solvers-50/SCHEDULER, 16 images)
set -euo pipefail
cd "$(dirname "$0")/../../.."
D=docs/scenes/bench
for case in "$@"; do
  S=${case%%:*}
  N=${case##*:}
  C=$D/solvers-$N/$S
  O=$C-captions20
  P=$O/profiles
  F=$P/etc-plus.json
  mkdir -p "$P"
  if [ ! -f "$F" ]; then
    ETCDIFF_PROFILE_DIR=$P etcdiff calibrate --model demo --scheduler "$S" --prompts $D/calibration_prompts_20.txt \
      --seed 42 --steps "$N" --out "$P" --no-plot --quiet --method etc-plus --set searched_schedules=true \
      | tee "$O/calibrate.txt"
    mv "$P"/scenes_"${N}"steps_*etc-plus.json "$F"
  fi
  etcdiff bench --model demo --scheduler "$S" --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps "$N" \
    --repeats 1 --threads 1 --no-progress --out "$O" \
    --settings "etc-plus:profile=$F calls=$((N / 2)),$((N / 3)),$((N / 4))"
done
