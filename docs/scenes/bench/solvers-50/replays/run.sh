#!/usr/bin/env bash
# The replayed calibration (`--set replays=true`: at most 30 generations with 10 prompts at 50 steps) against the
# default calibration, both made now on the calibration captions (../../calibration_prompts.txt, seed 42) at 50
# steps, measured on ../run.sh's 16 held-out images (the 8 evaluation captions at seeds 0-1) at 25, 16 and 12
# calls. The other methods on the same images are in ../SCHEDULER/.
# Usage: bash docs/scenes/bench/solvers-50/replays/run.sh [SCHEDULER ...]   (default: euler); outputs in SCHEDULER/.
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
D=docs/scenes/bench
O=$D/solvers-50/replays
for S in ${@:-euler}; do
  SET=""
  for how in default replays; do
    P=$O/profiles/$how
    F=$P/scenes_50steps_${S}_etc-plus.json
    EXTRA=$([ "$how" = replays ] && echo "--set replays=true" || true)
    [ -f "$F" ] || etcdiff calibrate --model demo --scheduler "$S" --prompts $D/calibration_prompts.txt --seed 42 \
      --steps 50 --out "$P" --no-plot --quiet --method etc-plus $EXTRA | tee "$P-$S.log"
    SET="$SET;etc-plus:profile=$F calls=25,16,12"
  done
  etcdiff bench --model demo --scheduler "$S" --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps 50 \
    --repeats 1 --threads 1 --no-progress --out "$O/$S" --settings "${SET#;}"
done
