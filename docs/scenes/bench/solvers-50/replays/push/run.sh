#!/usr/bin/env bash
# The replayed calibration with a push among the fitted pulls (`replay.FEEDBACK_PUSH`: a model that drives a strayed
# sample further, as this one does under classifier-free guidance), made with `--set replays=true` on the
# calibration captions (../../../calibration_prompts.txt, seed 42) at 50 steps, benched with the default and the
# earlier replayed profiles of ../profiles on ../run.sh's 16 held-out images (the 8 evaluation captions at seeds
# 0-1) at 25, 16 and 12 calls.
# Usage: bash docs/scenes/bench/solvers-50/replays/push/run.sh [SCHEDULER ...]   (default: euler); outputs in SCHEDULER/.
set -euo pipefail
cd "$(dirname "$0")/../../../../../.."
D=docs/scenes/bench
R=$D/solvers-50/replays
O=$R/push
for S in ${@:-euler}; do
  F=$O/profiles/scenes_50steps_${S}_etc-plus.json
  [ -f "$F" ] || etcdiff calibrate --model demo --scheduler "$S" --prompts $D/calibration_prompts.txt --seed 42 \
    --steps 50 --out "$O/profiles" --no-plot --quiet --method etc-plus --set replays=true | tee "$O/profiles/push-$S.log"
  SET=""
  for how in default replays; do
    SET="$SET;etc-plus:profile=$R/profiles/$how/scenes_50steps_${S}_etc-plus.json calls=25,16,12"
  done
  etcdiff bench --model demo --scheduler "$S" --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps 50 \
    --repeats 1 --threads 1 --no-progress --out "$O/$S" --settings "${SET#;};etc-plus:profile=$F calls=25,16,12"
done
