#!/usr/bin/env bash
# The step-level peers of 2025-26 (easycache, lazycache, lemica, precisecache) and the ETC paper's step-wise
# baselines (adaptive, sada) on the scenes model (`--model demo`), beside ETC+ and the ERTACache reconstruction:
# the held-out captions of ../evaluation_prompts.txt at seed 0, 50 steps, the calibrations of ../profiles (lemica
# calibrated there on ../calibration_prompts.txt at seed 42, like every other calibrated method). A reduced grid
# of the main sweep (../run.sh), run on its own so that it fits beside it.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
D=docs/scenes/bench
export ETCDIFF_PROFILE_DIR=$D/profiles
P=$ETCDIFF_PROFILE_DIR
if [ ! -f "$P/scenes_50steps_lemica.json" ]; then
  etcdiff calibrate --model demo --prompts $D/calibration_prompts.txt --seed 42 --steps 50 --quiet --out $P \
    --method lemica --set calls=17
fi
etcdiff bench --model demo --prompts $D/evaluation_prompts.txt --seeds 0 --steps 50 --repeats 1 --threads 1 \
  --no-progress --out $D/step-peers-2026 --settings "\
etc-plus:;etc-plus:calls=10,13,17,25;\
ertacache:profile=$P/ertacache_0.1.json,$P/ertacache_0.3.json,$P/ertacache_0.5.json;\
easycache:;easycache:threshold=0.1,0.2;easycache:warmup=5 threshold=0.2,0.4;\
lazycache:;lazycache:start_percent=0.05 threshold=0.4,0.8,1.6;\
precisecache:;precisecache:threshold=0.2,0.4;precisecache:max_skip=8 threshold=0.8;\
lemica:calls=10,13,17,25;lemica:predictor=etc calls=10,13,17,25;lemica:predictor=linear calls=10,13,17,25;\
adaptive:;adaptive:threshold=0.05;sada:"
