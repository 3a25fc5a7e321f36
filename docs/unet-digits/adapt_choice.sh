#!/usr/bin/env bash
# ETC+ calibrated with the held-out choice of adapt_trend (`--set adapt_trend=true`: each budget's plans also run
# with it on the held-out calibration runs, and keep it where it lands as close on average and closer in the worst
# runs) on the held-out UNet model, as run.sh calibrates (digits 0-4 at seed 42) and evaluates (digits 5-9 at seeds
# 0 and 1), at N/2, N/3 and N/4 calls: what calibration chose, and the same profile with adapt_trend=false.
# Nothing is tuned on this model. Usage: bash docs/unet-digits/adapt_choice.sh [MODEL:SOLVER [STEPS]]; outputs in
# adapt-choice/.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=docs/unet-digits
export ETCDIFF_PROFILE_DIR=$D/adapt-choice/profiles
P=$ETCDIFF_PROFILE_DIR
for RUN in ${1:-unet-digits:ddim unet-digits-dpm:dpm unet-digits:unipc}; do
  MODEL=${RUN%%:*}; SOLVER=${RUN##*:}
  SCHED=""; TAG=""
  [ "$SOLVER" = unipc ] && { SCHED="--scheduler unipc"; TAG="_unipc"; }
  for S in ${2:-20 28 50}; do
    [ -f "$P/${MODEL}_${S}steps${TAG}_etc-plus.json" ] || etcdiff calibrate --method etc-plus --set adapt_trend=true \
      --model "$MODEL" $SCHED --prompts $D/calibration_prompts.txt --seed 42 --steps "$S" --quiet --out "$P" --no-plot
    B="calls=$((S / 2)),$((S / 3)),$((S / 4))"
    etcdiff bench --model "$MODEL" $SCHED --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps "$S" --repeats 1 \
      --threads 1 --no-progress --out "$D/adapt-choice/$SOLVER-${S}steps" \
      --settings "etc-plus:$B;etc-plus:$B adapt_trend=false"
  done
done
