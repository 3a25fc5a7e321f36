#!/usr/bin/env bash
# ETC+ calibrated with the held-out choice of adapt_trend (`--set adapt_trend=true`: each budget's plans also run
# with it on the held-out calibration runs, and keep it where they land as close on average and closer in the worst
# runs), as ../run.sh calibrates (the calibration captions at seed 42, 28 FlowMatch Euler steps), measured on its 48
# held-out images (the 8 evaluation captions at seeds 0-5): what calibration chose, and the same profile with
# adapt_trend=false.
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
D=docs/scenes/bench
O=$D/adherence-28/adapt-choice
export ETCDIFF_PROFILE_DIR=$O/profiles
P=$ETCDIFF_PROFILE_DIR
[ -f "$P/scenes_28steps_etc-plus.json" ] || etcdiff calibrate --model demo --prompts $D/calibration_prompts.txt \
  --seed 42 --steps 28 --quiet --out "$P" --no-plot --method etc-plus --set adapt_trend=true
etcdiff bench --model demo --prompts $D/evaluation_prompts.txt --seeds 0,1,2,3,4,5 --steps 28 --repeats 1 --threads 1 \
  --no-progress --out $O --settings "etc-plus:calls=14,9,7;etc-plus:calls=14,9,7 adapt_trend=false"
