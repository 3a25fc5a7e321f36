#!/usr/bin/env bash
# ETC+ with and without the opt-in `adapt_trend=true` on the held-out UNet model, with run.sh's profiles and
# evaluation images (digits 5-9 at seeds 0 and 1), at N/2, N/3 and N/4 calls and in tolerance mode. Nothing is
# recalibrated, and adapt_trend was not designed on this model. Usage as run.sh; outputs in adapt-trend/.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=docs/unet-digits
export ETCDIFF_PROFILE_DIR=$D/profiles
for RUN in ${1:-unet-digits:ddim unet-digits-dpm:dpm unet-digits:unipc}; do
  MODEL=${RUN%%:*}; SOLVER=${RUN##*:}
  SCHED=""
  [ "$SOLVER" = unipc ] && SCHED="--scheduler unipc"
  for S in ${2:-20 28 50}; do
    B="calls=$((S / 2)),$((S / 3)),$((S / 4))"
    etcdiff bench --model "$MODEL" $SCHED --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps "$S" --repeats 1 \
      --threads 1 --no-progress --out "$D/adapt-trend/$SOLVER-${S}steps" \
      --settings "etc-plus:;etc-plus:$B;etc-plus:adapt_trend=true;etc-plus:$B adapt_trend=true"
  done
done
