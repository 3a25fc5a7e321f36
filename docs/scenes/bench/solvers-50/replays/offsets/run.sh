#!/usr/bin/env bash
# The replayed calibration with each candidate's offset (`--set replays=true --set replay_offsets=true`) on
# the calibration captions (../../../calibration_prompts.txt, seed 42) at 50 steps, benched beside the default
# calibration's profile (../profiles/default) at 25, 16 and 12 calls on the 8 fresh captions of
# ../default-first/fresh_prompts.txt (seeds 0-1; outputs in fresh/SCHEDULER/) and on ../run.sh's 16 held-out images
# (the 8 evaluation captions at seeds 0-1; outputs in SCHEDULER/).
# Usage: bash docs/scenes/bench/solvers-50/replays/offsets/run.sh [SCHEDULER ...]   (default: euler)
set -euo pipefail
cd "$(dirname "$0")/../../../../../.."
D=docs/scenes/bench
R=$D/solvers-50/replays
O=$R/offsets
mkdir -p "$O/profiles"
for S in ${@:-euler}; do
  F=$O/profiles/scenes_50steps_${S}_etc-plus.json
  [ -f "$F" ] || etcdiff calibrate --model demo --scheduler "$S" --prompts $D/calibration_prompts.txt --seed 42 \
    --steps 50 --out "$O/profiles" --no-plot --quiet --method etc-plus --set replays=true \
    --set replay_offsets=true 2>&1 \
    | tee "$O/profiles/$S.log"
  SET="etc-plus:profile=$R/profiles/default/scenes_50steps_${S}_etc-plus.json calls=25,16,12"
  SET="$SET;etc-plus:profile=$F calls=25,16,12"
  etcdiff bench --model demo --scheduler "$S" --prompts $R/default-first/fresh_prompts.txt --seeds 0,1 --steps 50 \
    --repeats 1 --threads 1 --no-progress --out "$O/fresh/$S" --settings "$SET"
  etcdiff bench --model demo --scheduler "$S" --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps 50 \
    --repeats 1 --threads 1 --no-progress --out "$O/$S" --settings "$SET"
done
