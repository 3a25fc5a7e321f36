#!/usr/bin/env bash
# ETC+ calibrated with `--set searched_schedules=true` (a budget runs a schedule searched by lexicographic minimax
# with its own predictor where held-out calibration runs found it closer than ETC+'s plan, reuse where clearly
# closer), benched on the images of the case's bench (its prompts, seeds, steps, scheduler) into
# `<case folder>-schedules`, so that scripts/etc_plus_margins.py --variant schedules reads its front beside the
# case's other methods. Calibrated on the calibration captions (calibration_prompts.txt, seed 42) as the
# case's profile was. CAPTIONS=20 calibrates on calibration_prompts_20.txt instead (the 10 calibration captions and
# the first 10 scenes-grammar captions at grammar seed 13 that are no calibration, evaluation, development or
# held-out caption) into `<case folder>-captions20` (--variant captions20).
# Usage: [CAPTIONS=20] bash docs/scenes/bench/schedules.sh SCHEDULER:STEPS ...   (euler:28 is adherence-28, 48
#        images; the others solvers-STEPS/SCHEDULER, 16 images)
set -euo pipefail
cd "$(dirname "$0")/../../.."
D=docs/scenes/bench
if [ "${CAPTIONS:-10}" = 20 ]; then PROMPTS=$D/calibration_prompts_20.txt TWIN=captions20
else PROMPTS=$D/calibration_prompts.txt TWIN=schedules; fi
for case in "$@"; do
  S=${case%%:*}
  N=${case##*:}
  if [ "$S:$N" = euler:28 ]; then
    C=$D/adherence-28 SEEDS=0,1,2,3,4,5 SCH=()  # the pipeline's own scheduler, as that bench ran it
  else
    C=$D/solvers-$N/$S SEEDS=0,1 SCH=(--scheduler "$S")
  fi
  O=$C-$TWIN
  P=$O/profiles
  F=$P/etc-plus.json
  mkdir -p "$P"
  if [ ! -f "$F" ]; then
    ETCDIFF_PROFILE_DIR=$P etcdiff calibrate --model demo "${SCH[@]}" --prompts "$PROMPTS" --seed 42 \
      --steps "$N" --out "$P" --no-plot --quiet --method etc-plus --set searched_schedules=true | tee "$O/calibrate.txt"
    mv "$P"/scenes_"${N}"steps_*etc-plus.json "$F"
  fi
  etcdiff bench --model demo "${SCH[@]}" --prompts $D/evaluation_prompts.txt --seeds $SEEDS --steps "$N" --repeats 1 \
    --threads 1 --no-progress --out "$O" --settings "etc-plus:profile=$F calls=$((N / 2)),$((N / 3)),$((N / 4))"
done
