#!/usr/bin/env bash
# One ETC+ calibration at 50 steps serving 28 and 20 steps from real full runs at each (`--set serve_steps=20,28
# --set serve_recorded=true`: 10 full runs and one run's probes per served step count, then the calibration made
# again on a surrogate of those runs), benched in the same run as the surrogate-served profile of ../ (drawn from
# the 50-step runs alone) and the native profiles: 28 steps on the 8 held-out captions at seeds 0-5 (48 images,
# ../../adherence-28), 20 steps at seeds 0-1 (16 images, ../../solvers-20/euler). FlowMatch Euler, the pipeline's
# own. The calibration saw only ../../calibration_prompts.txt at seed 42.
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
D=docs/scenes/bench
O=$D/served-from-50/recorded
export ETCDIFF_PROFILE_DIR=$O/profiles  # holds only the 50-step profile: nothing else is found at 20 or 28 steps
P=$ETCDIFF_PROFILE_DIR
[ -f "$P/scenes_50steps_etc-plus.json" ] || etcdiff calibrate --model demo --prompts $D/calibration_prompts.txt \
  --seed 42 --steps 50 --quiet --out $P --no-plot --method etc-plus --set serve_steps=20,28 --set serve_recorded=true
R=$P/scenes_50steps_etc-plus.json
S=$D/served-from-50/profiles/scenes_50steps_etc-plus.json
etcdiff bench --model demo --prompts $D/evaluation_prompts.txt --seeds 0,1,2,3,4,5 --steps 28 --repeats 1 --threads 1 \
  --no-progress --out $O/28 \
  --settings "etc-plus:profile=$R,$S,$D/adherence-28/profiles/scenes_28steps_etc-plus.json calls=14,9,7"
etcdiff bench --model demo --scheduler euler --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps 20 --repeats 1 \
  --threads 1 --no-progress --out $O/20 \
  --settings "etc-plus:profile=$R,$S,$D/solvers-20/profiles/euler/scenes_20steps_etc-plus.json calls=10,6,5"
