#!/usr/bin/env bash
# ETC+ calibrated with `--set trend_caps=true` on the scenes model at 20 steps (the calibration captions, seed 42),
# measured on the 16 held-out images of ../solvers-28/run.sh's protocol (8 evaluation captions x seeds 0-1) at
# calls 10, 6, 5, into SCHEDULER-trend-caps/. The other methods' rows are in SCHEDULER/.
# Usage: bash docs/scenes/bench/solvers-20/trend_caps.sh [SCHEDULER ...]   (default: dpm unipc euler)
set -euo pipefail
cd "$(dirname "$0")/../../../.."
D=docs/scenes/bench
for S in ${@:-dpm unipc euler}; do
  O=$D/solvers-20/$S-trend-caps
  P=$O/profiles
  if [ ! -f "$P/scenes_20steps_etc-plus_trend_caps.json" ]; then
    etcdiff calibrate --model demo --scheduler $S --prompts $D/calibration_prompts.txt --seed 42 --steps 20 --quiet \
      --out $P --no-plot --method etc-plus --set trend_caps=true
    mv "$P"/scenes_20steps_*etc-plus.json "$P/scenes_20steps_etc-plus_trend_caps.json"
  fi
  etcdiff bench --model demo --scheduler $S --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps 20 --repeats 1 \
    --threads 1 --no-progress --out $O --settings "etc-plus:profile=$P/scenes_20steps_etc-plus_trend_caps.json calls=10,6,5"
done
