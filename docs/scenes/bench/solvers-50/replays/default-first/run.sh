#!/usr/bin/env bash
# The replayed calibration that starts its choice from the conservative candidate (no probes, gains only where they
# held out of sample) and leaves it only for one that beats it by more than the replays miss real runs by, made with
# `--set replays=true` on the calibration captions (../../../calibration_prompts.txt, seed 42) at 50 steps, benched
# with the default and the replayed-with-push profiles (../profiles/default, ../push/profiles) on ../run.sh's 16
# held-out images (the 8 evaluation captions at seeds 0-1) at 25, 16 and 12 calls.
# Usage: bash docs/scenes/bench/solvers-50/replays/default-first/run.sh [SCHEDULER ...]   (default: euler); outputs in SCHEDULER/.
set -euo pipefail
cd "$(dirname "$0")/../../../../../.."
D=docs/scenes/bench
R=$D/solvers-50/replays
O=$R/default-first
for S in ${@:-euler}; do
  F=$O/profiles/scenes_50steps_${S}_etc-plus.json
  [ -f "$F" ] || etcdiff calibrate --model demo --scheduler "$S" --prompts $D/calibration_prompts.txt --seed 42 \
    --steps 50 --out "$O/profiles" --no-plot --quiet --method etc-plus --set replays=true | tee "$O/profiles/default-first-$S.log"
  SET="etc-plus:profile=$R/profiles/default/scenes_50steps_${S}_etc-plus.json calls=25,16,12"
  SET="$SET;etc-plus:profile=$R/push/profiles/scenes_50steps_${S}_etc-plus.json calls=25,16,12"
  etcdiff bench --model demo --scheduler "$S" --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps 50 \
    --repeats 1 --threads 1 --no-progress --out "$O/$S" --settings "$SET;etc-plus:profile=$F calls=25,16,12"
done
