#!/usr/bin/env bash
# Every step-level method on the embedded digits model, calibrated on held-in prompts and measured on others:
# calibration on the digits 0-4 at seed 42, evaluation on the digits 5-9 at seeds 0 and 1, 50 steps.
# The calibrations go to docs/digits/bench/profiles (ETCDIFF_PROFILE_DIR), where etcdiff.enable finds them.
set -euo pipefail
cd "$(dirname "$0")/../../.."
D=docs/digits/bench
export ETCDIFF_PROFILE_DIR=$D/profiles
CAL="--model digits --prompts $D/calibration_prompts.txt --seed 42 --steps 50 --quiet --out $ETCDIFF_PROFILE_DIR"
if [ ! -f "$ETCDIFF_PROFILE_DIR/digits_50steps.json" ]; then
  etcdiff calibrate $CAL --no-plot
  for m in teacache magcache sencache; do etcdiff calibrate $CAL --method $m; done
  etcdiff calibrate $CAL --method meancache --set calls=17
  for t in 0.1 0.2 0.5; do
    etcdiff calibrate $CAL --method ertacache --threshold $t --no-plot
    mv "$ETCDIFF_PROFILE_DIR/digits_50steps_ertacache.json" "$ETCDIFF_PROFILE_DIR/ertacache_$t.json"
  done
  etcdiff calibrate $CAL --method etc-plus
fi
if [ ! -f "$ETCDIFF_PROFILE_DIR/digits_50steps_lemica.json" ]; then
  etcdiff calibrate $CAL --method lemica --set calls=17
fi
P=$ETCDIFF_PROFILE_DIR
etcdiff bench --model digits --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps 50 --repeats 1 --threads 1 \
  --no-progress --out $D --settings "\
etc:warmup=6;etc:threshold=0.03,0.1;\
etc-plus:;etc-plus:calls=8,10,13,17,25;\
ertacache:profile=$P/ertacache_0.1.json,$P/ertacache_0.2.json,$P/ertacache_0.5.json;\
meancache:calls=10,13,17,25;\
sencache:eps_start=0.05 eps_main=0.2 max_reuse=4;sencache:eps_start=0.1 eps_main=0.5 max_reuse=6;\
sencache:eps_start=0.2 eps_main=1.0 max_reuse=8;\
teacache:threshold=0.05,0.1,0.2;magcache:threshold=0.06,0.12,0.24;\
fixed:interval=2,3,4,5;linear:interval=2,3;\
easycache:;easycache:threshold=0.1,0.2,0.4;easycache:warmup=5 threshold=0.05,0.1,0.2,0.4;\
easycache:warmup=2 threshold=0.1,0.2;\
lazycache:;lazycache:threshold=0.1,0.4,0.8;lazycache:start_percent=0.05 threshold=0.2,0.4,0.8,1.6;\
precisecache:;precisecache:threshold=0.05,0.2,0.4;precisecache:max_skip=8 threshold=0.2,0.4,0.8;\
lemica:calls=10,13,17,25;lemica:predictor=linear calls=10,13,17,25;lemica:predictor=etc calls=10,13,17,25"
