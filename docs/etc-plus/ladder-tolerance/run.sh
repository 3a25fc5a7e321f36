#!/usr/bin/env bash
# Items 2 and 3 of issue 25 on the two pipeline models, with the committed default ETC+ profiles (the ones the margin
# table's benches use): ETC+ at every budget from N/5 to N/2 calls (does one more call ever cost over 1 dB?) and in
# tolerance mode (does each held-out image end within the profile's target?), on the held-out images: the scenes
# model's 8 evaluation captions and the UNet's digits 5-9, at seeds 0 and 1. Then the table:
# python scripts/etc_plus_ladder_tolerance.py --out docs/etc-plus docs/etc-plus/ladder-tolerance/*-[0-9][0-9]/ (0-1)
# Usage: bash docs/etc-plus/ladder-tolerance/run.sh [scenes|unet] [STEPS ...]   (default: both models; 20, 28 and 50)
#        SCHEDULERS="euler" bash docs/etc-plus/ladder-tolerance/run.sh scenes 28   (the scenes model's schedulers)
#        SEEDS=2,3 bash docs/etc-plus/ladder-tolerance/run.sh   (other noises: each case into CASE-seeds-2-3)
#        TWIN=schedules bash docs/etc-plus/ladder-tolerance/run.sh   (each case's searched-schedules twin profile,
#          <case bench folder>-schedules/profiles/etc-plus.json, into CASE-schedules)
#        REPEATS=0 ...   (time nothing: each setting runs once; the table reads no wall-clock)
#        RUN="spike=1000000000" NAME=nospike ...   (every ETC+ setting with these run settings, into CASE-nospike)
set -euo pipefail
cd "$(dirname "$0")/../../.."
O=docs/etc-plus/ladder-tolerance
S=docs/scenes/bench
U=docs/unet-digits
SEEDS=${SEEDS:-0,1}
TWIN=${TWIN:-}
RUN=${RUN:-}
NAME=${NAME:-}
SUFFIX=${TWIN:+-$TWIN}${NAME:+-$NAME}$([ "$SEEDS" = 0,1 ] && echo "" || echo "-seeds-${SEEDS//,/-}")
ladder() { local n=$1 a=$(( ($1 + 4) / 5 )) b=$(( $1 / 2 )); seq -s, "$a" "$b"; }
bench() {  # OUT MODEL SCHEDULER_ARGS PROMPTS STEPS PROFILE
  etcdiff bench --model "$2" $3 --prompts "$4" --seeds "$SEEDS" --steps "$5" --repeats "${REPEATS:-1}" --threads 1 \
    --no-progress --out "$O/$1$SUFFIX" --settings "etc-plus:profile=$6 calls=$(ladder "$5") $RUN;etc-plus:profile=$6 $RUN"
}
STEPS=${*:2}; STEPS=${STEPS:-20 28 50}
for N in $STEPS; do
  if [ "${1:-all}" != unet ]; then
    for SCHED in ${SCHEDULERS:-euler unipc dpm}; do
      P=$S/solvers-$N/profiles/$SCHED/scenes_${N}steps_etc-plus.json
      [ "$SCHED$N" = euler28 ] && P=$S/adherence-28/profiles/scenes_28steps_etc-plus.json
      if [ -n "$TWIN" ]; then
        C=$S/solvers-$N/$SCHED
        [ "$SCHED$N" = euler28 ] && C=$S/adherence-28
        P=$C-$TWIN/profiles/etc-plus.json
      fi
      bench "scenes-$SCHED-$N" demo "--scheduler $SCHED" $S/evaluation_prompts.txt "$N" "$P"
    done
  fi
  if [ "${1:-all}" != scenes ]; then
    unet() { [ -n "$TWIN" ] && echo "$U/$1-${N}steps-$TWIN/profiles/etc-plus.json" || echo "$U/profiles/$2"; }
    bench "unet-ddim-$N" unet-digits "" $U/evaluation_prompts.txt "$N" "$(unet ddim "unet-digits_${N}steps_etc-plus.json")"
    bench "unet-dpm-$N" unet-digits-dpm "" $U/evaluation_prompts.txt "$N" \
      "$(unet dpm "unet-digits-dpm_${N}steps_etc-plus.json")"
    bench "unet-unipc-$N" unet-digits "--scheduler unipc" $U/evaluation_prompts.txt "$N" \
      "$(unet unipc "unet-digits_${N}steps_unipc_etc-plus.json")"
  fi
done
