#!/usr/bin/env bash
# ETC+'s replayed calibration (`--set replays=true`: at most 30 generations) on the scenes model at 28 steps, benched
# beside the default calibration's profile on the same 16 held-out images (the 8 evaluation captions at seeds 0-1) at
# 14, 9 and 7 calls. Calibrated as the default was (the calibration captions at seed 42, 28 steps), with nothing set
# but replays. Default profiles: ../../adherence-28/profiles (FlowMatch Euler) and ../profiles/SCHEDULER (UniPC,
# DPM-Solver++).
# Usage: bash docs/scenes/bench/solvers-28/replays/run.sh [SCHEDULER ...]   (default: euler unipc dpm); outputs in
# SCHEDULER/, profiles and calibration logs in profiles/.
#        STEPS=20 bash docs/scenes/bench/solvers-28/replays/run.sh ...   (another step count: into
# ../../solvers-20/replays, against ../../solvers-20/profiles, at 10, 6 and 5 calls)
#        OUT=docs/scenes/bench/solvers-28/replays/offsets EXTRA="--set replay_offsets=true" bash ...   (the option)
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
D=docs/scenes/bench
STEPS=${STEPS:-28}
O=${OUT:-$D/solvers-$STEPS/replays}  # OUT, EXTRA: another output folder and more --set options
CALLS="calls=$((STEPS / 2)),$((STEPS / 3)),$((STEPS / 4))"
mkdir -p "$O/profiles"
for S in ${@:-euler unipc dpm}; do
  F=$O/profiles/scenes_${STEPS}steps_${S}_etc-plus.json
  [ -f "$F" ] || etcdiff calibrate --model demo --scheduler "$S" --prompts $D/calibration_prompts.txt --seed 42 \
    --steps "$STEPS" --out "$O/profiles" --no-plot --quiet --method etc-plus --set replays=true ${EXTRA:-} 2>&1 \
    | tee "$O/profiles/$S.log"
  DEFAULT=$D/solvers-$STEPS/profiles/$S/scenes_${STEPS}steps_etc-plus.json
  [ "$S" = euler ] && [ "$STEPS" = 28 ] && DEFAULT=$D/adherence-28/profiles/scenes_28steps_etc-plus.json
  SET="etc-plus:profile=$DEFAULT $CALLS;etc-plus:profile=$F $CALLS"
  etcdiff bench --model demo --scheduler "$S" --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps "$STEPS" \
    --repeats 1 --threads 1 --no-progress --out "$O/$S" --settings "$SET"
done
