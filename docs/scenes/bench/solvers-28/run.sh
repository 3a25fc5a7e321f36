#!/usr/bin/env bash
# The scenes model at 28 steps with the multistep solvers users run on flow models: UniPC and DPM-Solver++ 2M, both
# on flow sigmas (`--scheduler unipc|dpm`). 16 images each: the 8 held-out captions of ../evaluation_prompts.txt at
# seeds 0-1. Every method is calibrated with that scheduler on the model's calibration captions
# (../calibration_prompts.txt, seed 42) at 28 steps with its defaults, into profiles/. FlowMatch Euler at 28 steps
# is ../adherence-28 (48 images).
# Usage: bash docs/scenes/bench/solvers-28/run.sh [SCHEDULER ...]   (default: unipc dpm)
#        STEPS=20 bash docs/scenes/bench/solvers-28/run.sh ...    (another step count, into ../solvers-20)
set -euo pipefail
cd "$(dirname "$0")/../../../.."
D=docs/scenes/bench
STEPS=${STEPS:-28}
O=$D/solvers-$STEPS
export ETCDIFF_PROFILE_DIR=$O/profiles
P=$ETCDIFF_PROFILE_DIR
for S in ${@:-unipc dpm}; do
  CAL="--model demo --scheduler $S --prompts $D/calibration_prompts.txt --seed 42 --steps $STEPS --quiet --out $P --no-plot"
  [ -f "$P/$S/scenes_${STEPS}steps_etc-plus.json" ] || { etcdiff calibrate $CAL --method etc-plus && mkdir -p "$P/$S" && \
    mv "$P/scenes_${STEPS}steps_${S}_etc-plus.json" "$P/$S/scenes_${STEPS}steps_etc-plus.json"; }
  MEAN=""
  for c in $((STEPS / 2)) $((STEPS / 3)) $((STEPS / 4)); do
    if [ ! -f "$P/$S/meancache_$c.json" ]; then
      etcdiff calibrate $CAL --method meancache --set calls=$c && mv "$P/scenes_${STEPS}steps_${S}_meancache.json" "$P/$S/meancache_$c.json" \
        || echo "meancache did not calibrate with $S (above: why)"
    fi
    [ -f "$P/$S/meancache_$c.json" ] && MEAN="$MEAN,$P/$S/meancache_$c.json"
  done
  for t in 0.2 0.3 0.5 0.7; do
    [ -f "$P/$S/ertacache_$t.json" ] || { etcdiff calibrate $CAL --method ertacache --threshold $t && \
      mv "$P/scenes_${STEPS}steps_${S}_ertacache.json" "$P/$S/ertacache_$t.json"; }
  done
  SET="etc-plus:profile=$P/$S/scenes_${STEPS}steps_etc-plus.json calls=$((STEPS / 2)),$((STEPS / 3)),$((STEPS / 4));fixed:interval=2,3,4;\
ertacache:profile=$P/$S/ertacache_0.2.json,$P/$S/ertacache_0.3.json,$P/$S/ertacache_0.5.json,$P/$S/ertacache_0.7.json"
  [ -n "$MEAN" ] && SET="$SET;meancache:profile=${MEAN#,}"
  etcdiff bench --model demo --scheduler "$S" --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps $STEPS --repeats 1 \
    --threads 1 --no-progress --out "$O/$S" --settings "$SET"
done
