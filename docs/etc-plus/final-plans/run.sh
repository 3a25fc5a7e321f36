#!/usr/bin/env bash
# ETC+ calibrated with `--set final_plans=true` (the budget ladder measured on the profile's own plans), beside the
# default profiles of ../ladder-tolerance: the same calibration (captions or digits, seed 42, the model's
# scheduler and step count) with the one setting added, into profiles/.
# Usage: bash docs/etc-plus/final-plans/run.sh calibrate [scenes|unet] [STEPS ...]   (default: both; 20, 28, 50)
#        SCHEDULERS="unipc" bash docs/etc-plus/final-plans/run.sh calibrate scenes 50
#        SEEDS=4,5 bash docs/etc-plus/final-plans/run.sh bench scenes unipc 50   (the new profile's ladder and
#            tolerance mode on the held-out images into CASE-seeds-4-5 here; the default profile's at the same seeds:
#            SEEDS=4,5 SCHEDULERS=unipc bash docs/etc-plus/ladder-tolerance/run.sh scenes 50)
#        SEEDS=0,1,2,3 CALLS=19,20 bash docs/etc-plus/final-plans/run.sh bench scenes unipc 50   (only these budgets:
#            the plans no bench of the default profile ran)
#        bash docs/etc-plus/final-plans/run.sh table   (every profile here read off the default's benches, with its
#            own benches here: python scripts/etc_plus_final_plans.py, into docs/etc-plus; then both profiles'
#            fronts at 2x-4x beside the other methods': scripts/etc_plus_final_plans_margins.py, into this folder)
set -euo pipefail
cd "$(dirname "$0")/../../.."
F=docs/etc-plus/final-plans
L=docs/etc-plus/ladder-tolerance
S=docs/scenes/bench
U=docs/unet-digits
P=$F/profiles
SEEDS=${SEEDS:-4,5}
ladder() { seq -s, $(( ($1 + 4) / 5 )) $(( $1 / 2 )); }
scenes_profile() { echo "$P/scenes_$2steps_$1_etc-plus.json"; }       # SCHEDULER STEPS
unet_profile() {  # CASE (ddim|dpm|unipc) STEPS
  case $1 in ddim) echo "$P/unet-digits_$2steps_etc-plus.json" ;; dpm) echo "$P/unet-digits-dpm_$2steps_etc-plus.json" ;;
    unipc) echo "$P/unet-digits_$2steps_unipc_etc-plus.json" ;; esac; }
unet_args() { case $1 in ddim) echo "--model unet-digits" ;; dpm) echo "--model unet-digits-dpm" ;;
  unipc) echo "--model unet-digits --scheduler unipc" ;; esac; }
case "${1:-}" in
  calibrate)
    STEPS=${*:3}; STEPS=${STEPS:-20 28 50}
    for N in $STEPS; do
      if [ "${2:-all}" != unet ]; then
        for SCHED in ${SCHEDULERS:-euler unipc dpm}; do
          [ -f "$(scenes_profile "$SCHED" "$N")" ] || etcdiff calibrate --model demo --scheduler "$SCHED" \
            --prompts $S/calibration_prompts.txt --seed 42 --steps "$N" --quiet --out $P --no-plot \
            --method etc-plus --set final_plans=true
        done
      fi
      if [ "${2:-all}" != scenes ]; then
        for C in ddim dpm unipc; do
          [ -f "$(unet_profile $C "$N")" ] || etcdiff calibrate $(unet_args $C) --prompts $U/calibration_prompts.txt \
            --seed 42 --steps "$N" --quiet --out $P --no-plot --method etc-plus --set final_plans=true
        done
      fi
    done ;;
  bench)
    MODEL=$2 C=$3 N=$4
    if [ "$MODEL" = scenes ]; then
      PR=$(scenes_profile "$C" "$N"); ARGS="--model demo --scheduler $C"; EV=$S/evaluation_prompts.txt
    else
      PR=$(unet_profile "$C" "$N"); ARGS=$(unet_args "$C"); EV=$U/evaluation_prompts.txt
    fi
    SET="etc-plus:profile=$PR calls=${CALLS:-$(ladder "$N")}"
    [ -n "${CALLS:-}" ] || SET="$SET;etc-plus:profile=$PR"  # the whole ladder: and the tolerance mode
    etcdiff bench $ARGS --prompts $EV --seeds "$SEEDS" --steps "$N" --repeats 1 --threads 1 --no-progress \
      --out "$F/$MODEL-$C-$N-seeds-${SEEDS//,/-}" --settings "$SET" ;;
  table)  # each case: the default profile's benches at every seed, and the new profile's own benches here
    CASES=()
    folders() { ls -d $L/$1 $L/$1-seeds-* $F/$1-seeds-* 2>/dev/null || true; }
    for N in 20 28 50; do
      for C in euler unipc dpm; do
        [ -f "$(scenes_profile $C $N)" ] && CASES+=(--case "$(scenes_profile $C $N)" $(folders scenes-$C-$N))
      done
      for C in ddim dpm unipc; do
        [ -f "$(unet_profile $C $N)" ] && CASES+=(--case "$(unet_profile $C $N)" $(folders unet-$C-$N))
      done
    done
    python scripts/etc_plus_final_plans.py "${CASES[@]}" --out docs/etc-plus
    python scripts/etc_plus_final_plans_margins.py --out $F ;;  # item 1 with both profiles, off the same benches
  *) echo "usage: bash docs/etc-plus/final-plans/run.sh calibrate|bench|table ... (see the head of this file)" >&2
     exit 2 ;;
esac
