#!/usr/bin/env bash
# ETC+ calibrated with the held-out choice of adapt_trend (`--set adapt_trend=true`) under the multistep solvers, as
# run.sh calibrates (the calibration captions at seed 42, 28 steps), measured on adherence_48.sh's 48 held-out
# images (the 8 evaluation captions at seeds 0-5): what calibration chose, and the same profile with
# adapt_trend=false. adherence_48.sh's folders hold the other methods on the same images.
# Usage: bash docs/scenes/bench/solvers-28/adapt_choice.sh [SCHEDULER ...]   (default: unipc dpm); outputs in
# <scheduler>-adapt-choice/.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
D=docs/scenes/bench
O=$D/solvers-28
for S in ${@:-unipc dpm}; do
  P=$O/$S-adapt-choice/profiles
  F=$P/scenes_28steps_${S}_etc-plus.json
  [ -f "$F" ] || etcdiff calibrate --model demo --scheduler "$S" --prompts $D/calibration_prompts.txt --seed 42 \
    --steps 28 --quiet --out "$P" --no-plot --method etc-plus --set adapt_trend=true
  etcdiff bench --model demo --scheduler "$S" --prompts $D/evaluation_prompts.txt --seeds 0,1,2,3,4,5 --steps 28 \
    --repeats 1 --threads 1 --no-progress --out "$O/$S-adapt-choice" \
    --settings "etc-plus:profile=$F calls=14,9,7;etc-plus:profile=$F calls=14,9,7 adapt_trend=false"
done
