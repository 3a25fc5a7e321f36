#!/usr/bin/env bash
# ETC+ calibrated with `--set searched_schedules=true` on the held-out UNet (a budget runs a schedule searched by
# lexicographic minimax with its own predictor where the held-out calibration runs found it closer than ETC+'s
# plan, a reuse schedule where clearly closer), benched on the images of that case's bench (digits 5-9 at seeds 0 and 1) into
# `<SOLVER>-<STEPS>steps-schedules`, for scripts/etc_plus_margins.py --variant schedules: the settings of ETC+ that
# run.sh benches (its tolerance mode, which a schedule never serves, and calls=N/2, N/3, N/4). Calibrated as run.sh
# calibrates (digits 0-4, seed 42, the method's defaults but this one setting); nothing is tuned on this model.
# Usage: bash docs/unet-digits/schedules.sh MODEL:SOLVER [STEPS ...]   (e.g. unet-digits:ddim 20 28 50)
set -euo pipefail
cd "$(dirname "$0")/../.."
D=docs/unet-digits
RUN=$1
shift
MODEL=${RUN%%:*}
SOLVER=${RUN##*:}
SCHED=()
[ "$SOLVER" = unipc ] && SCHED=(--scheduler unipc)  # the DDIM model's config, sampled by UniPC
for S in ${@:-20 28 50}; do
  O=$D/$SOLVER-${S}steps-schedules
  P=$O/profiles
  F=$P/etc-plus.json
  mkdir -p "$P"
  if [ ! -f "$F" ]; then
    ETCDIFF_PROFILE_DIR=$P etcdiff calibrate --model "$MODEL" "${SCHED[@]}" --prompts $D/calibration_prompts.txt \
      --seed 42 --steps "$S" --quiet --out "$P" --no-plot --method etc-plus --set searched_schedules=true \
      | tee "$O/calibrate.txt"
    mv "$P"/"${MODEL}"_"${S}"steps*_etc-plus.json "$F"
  fi
  SET="etc-plus:profile=$F;etc-plus:profile=$F calls=$((S / 2)),$((S / 3)),$((S / 4))"
  etcdiff bench --model "$MODEL" "${SCHED[@]}" --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps "$S" \
    --repeats 1 --threads 1 --no-progress --out "$O" --settings "$SET"
done
