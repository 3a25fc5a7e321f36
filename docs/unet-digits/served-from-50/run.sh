#!/usr/bin/env bash
# One ETC+ calibration at 50 steps serving 28 and 20 steps (`--set serve_steps=20,28`) on the held-out UNet digits
# model (epsilon prediction), per solver (DDIM, DPM-Solver++ 2M, UniPC), benched against the calibrations made
# natively at 20 and 28 steps (../profiles, made by ../run.sh), in the same bench run. Calibration: the digits 0-4
# at seed 42 (../calibration_prompts.txt); evaluation: the digits 5-9 at seeds 0 and 1 (10 images). Nothing here is
# tuned on this model. With SERVE_RECORDED=1 (recorded/run.sh) the calibration adds `--set serve_recorded=true`,
# writes under recorded/, and each bench also runs the profiles of this folder.
# Usage: bash docs/unet-digits/served-from-50/run.sh [MODEL:SOLVER ...]
set -euo pipefail
cd "$(dirname "$0")/../../.."
D=docs/unet-digits
O=$D/served-from-50${SERVE_RECORDED:+/recorded}
export ETCDIFF_PROFILE_DIR=$O/profiles  # only the 50-step profiles: each bench names the profiles it runs
P=$ETCDIFF_PROFILE_DIR
for RUN in ${1:-unet-digits:ddim unet-digits-dpm:dpm unet-digits:unipc}; do
  MODEL=${RUN%%:*}; SOLVER=${RUN##*:}
  SCHED=""; TAG=""
  [ "$SOLVER" = unipc ] && { SCHED="--scheduler unipc"; TAG="_unipc"; }
  SERVED=$P/${MODEL}_50steps${TAG}_etc-plus.json
  ALSO=${SERVE_RECORDED:+,$D/served-from-50/profiles/${MODEL}_50steps${TAG}_etc-plus.json}
  [ -f "$SERVED" ] || etcdiff calibrate --model "$MODEL" $SCHED --prompts $D/calibration_prompts.txt --seed 42 \
    --steps 50 --quiet --out $P --no-plot --method etc-plus --set serve_steps=20,28 \
    ${SERVE_RECORDED:+--set serve_recorded=true}
  for S in 20 28; do
    NATIVE=$D/profiles/${MODEL}_${S}steps${TAG}_etc-plus.json
    etcdiff bench --model "$MODEL" $SCHED --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps "$S" --repeats 1 \
      --threads 1 --no-progress --out "$O/$SOLVER-${S}steps" \
      --settings "etc-plus:profile=$SERVED$ALSO,$NATIVE calls=$((S / 2)),$((S / 3)),$((S / 4))"
  done
done
