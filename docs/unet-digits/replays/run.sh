#!/usr/bin/env bash
# ETC+'s replayed calibration (`--set replays=true`: at most 30 generations) on the held-out UNet digits model, benched
# beside the default calibration's profile (../profiles) on the same held-out images: the digits 5-9 at seeds 0 and 1,
# at S/2, S/3 and S/4 calls. Calibrated as ../run.sh calibrates (digits 0-4 at seed 42), with nothing set but replays.
# Usage: bash docs/unet-digits/replays/run.sh [MODEL:SOLVER [STEPS]]   (default: unet-digits:ddim,
# unet-digits-dpm:dpm and unet-digits:unipc; 20, 28 and 50); outputs in SOLVER-STEPSsteps/, profiles in profiles/.
set -euo pipefail
cd "$(dirname "$0")/../../.."
D=docs/unet-digits
O=${OUT:-$D/replays}  # OUT, EXTRA: another output folder and more --set options (offsets/run.sh)
mkdir -p "$O/profiles"
for RUN in ${1:-unet-digits:ddim unet-digits-dpm:dpm unet-digits:unipc}; do
  MODEL=${RUN%%:*}; SOLVER=${RUN##*:}
  SCHED=""; TAG=""
  [ "$SOLVER" = unipc ] && { SCHED="--scheduler unipc"; TAG="_unipc"; }  # the DDIM model's config, sampled by UniPC
  for S in ${2:-20 28 50}; do
    F=$O/profiles/${MODEL}_${S}steps${TAG}_etc-plus.json
    [ -f "$F" ] || etcdiff calibrate --model "$MODEL" $SCHED --prompts $D/calibration_prompts.txt --seed 42 \
      --steps "$S" --quiet --no-plot --out "$O/profiles" --method etc-plus --set replays=true ${EXTRA:-} 2>&1 \
      | tee "$O/profiles/${MODEL}_${S}steps${TAG}.log"
    CALLS="calls=$((S / 2)),$((S / 3)),$((S / 4))"
    SET="etc-plus:profile=$D/profiles/${MODEL}_${S}steps${TAG}_etc-plus.json $CALLS;etc-plus:profile=$F $CALLS"
    etcdiff bench --model "$MODEL" $SCHED --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps "$S" --repeats 1 \
      --threads 1 --no-progress --out "$O/$SOLVER-${S}steps" --settings "$SET"
  done
done
