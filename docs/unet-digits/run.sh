#!/usr/bin/env bash
# Step methods on the held-out UNet digits model (epsilon prediction), with DDIM, DPM-Solver++ 2M and UniPC, at 20,
# 28 and 50 steps. Nothing here is tuned on this model: every calibrated method is fitted by `etcdiff calibrate` on the
# digits 0-4 at seed 42 with its default settings, and measured on the digits 5-9 at seeds 0 and 1.
# ETC's fixed tolerance 0.0602 is the one calibrated on the digits DiT (docs/digits/bench), not on this model.
# ERTACache does not run here: DDIMScheduler has no sigmas, and ERTACache refuses DPM-Solver++ with epsilon prediction
# (its first-order timestep correction broke every image there: 4.5 dB in an earlier run).
# Usage: bash docs/unet-digits/run.sh [MODEL:SOLVER [STEPS]]   (default: unet-digits:ddim, unet-digits-dpm:dpm and
# unet-digits:unipc; 20, 28 and 50)
set -euo pipefail
cd "$(dirname "$0")/../.."
D=docs/unet-digits
export ETCDIFF_PROFILE_DIR=$D/profiles
P=$ETCDIFF_PROFILE_DIR
for RUN in ${1:-unet-digits:ddim unet-digits-dpm:dpm unet-digits:unipc}; do
  MODEL=${RUN%%:*}; SOLVER=${RUN##*:}
  SCHED=""; TAG=""
  [ "$SOLVER" = unipc ] && { SCHED="--scheduler unipc"; TAG="_unipc"; }  # the DDIM model's config, sampled by UniPC
  for S in ${2:-20 28 50}; do
    CAL="--model $MODEL $SCHED --prompts $D/calibration_prompts.txt --seed 42 --steps $S --quiet --out $P"
    [ -f "$P/${MODEL}_${S}steps${TAG}.json" ] || etcdiff calibrate $CAL --no-plot
    [ -f "$P/${MODEL}_${S}steps${TAG}_etc-plus.json" ] || etcdiff calibrate $CAL --method etc-plus
    SET="etc:;etc:threshold=0.0602;etc-plus:;etc-plus:calls=$((S / 2)),$((S / 3)),$((S / 4));fixed:interval=2,3,4"
    etcdiff bench --model "$MODEL" $SCHED --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps "$S" --repeats 1 \
      --threads 1 --no-progress --out "$D/$SOLVER-${S}steps" --settings "$SET"
  done
done
