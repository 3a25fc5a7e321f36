#!/usr/bin/env bash
# Every step-level method and the FLUX block-level peers on the embedded scenes model (`--model demo`), calibrated
# on the model's calibration captions (grammar seed 777) and measured on eight held-out captions (grammar seed
# 20261122, none of them a calibration caption) at seed 0, 50 steps, true CFG 3.0.
# The calibrations go to docs/scenes/bench/profiles (ETCDIFF_PROFILE_DIR), where etcdiff.enable finds them.
# ETC+'s calibration chooses on its own calibration runs whether its plan follows the probes; three variants are
# measured beside it (not used to choose anything), calibrated the same way into variants/: the probes forced on,
# forced off, and fitted gains everywhere.
set -euo pipefail
cd "$(dirname "$0")/../../.."
D=docs/scenes/bench
export ETCDIFF_PROFILE_DIR=$D/profiles
CAL="--model demo --prompts $D/calibration_prompts.txt --seed 42 --steps 50 --quiet --out $ETCDIFF_PROFILE_DIR"
if [ ! -f "$ETCDIFF_PROFILE_DIR/scenes_50steps.json" ]; then
  etcdiff calibrate $CAL
  for m in teacache magcache sencache etc-plus; do etcdiff calibrate $CAL --method $m; done
  etcdiff calibrate $CAL --method meancache --set calls=17
  for t in 0.1 0.2 0.3 0.4 0.5; do
    etcdiff calibrate $CAL --method ertacache --threshold $t --no-plot
    mv "$ETCDIFF_PROFILE_DIR/scenes_50steps_ertacache.json" "$ETCDIFF_PROFILE_DIR/ertacache_$t.json"
  done
fi
if [ ! -f "$D/variants/etc-plus_fitted-gains.json" ]; then
  for v in probes:propagation=true no-probes:propagation=false fitted-gains:corrections=true; do
    etcdiff calibrate $CAL --method etc-plus --set "${v#*:}" --out $D/variants --no-plot
    mv "$D/variants/scenes_50steps_etc-plus.json" "$D/variants/etc-plus_${v%%:*}.json"
  done
fi
P=$ETCDIFF_PROFILE_DIR
source $D/step_settings.sh
etcdiff bench --model demo --prompts $D/evaluation_prompts.txt --seeds 0 --steps 50 --repeats 1 \
  --no-progress --out $D --settings "$STEP_SETTINGS;\
diffusers-fbc:threshold=0.05,0.1,0.2;diffusers-taylorseer:;cache-dit:;\
etc-plus:profile=$D/variants/etc-plus_probes.json calls=8,10,13,17,25;\
etc-plus:profile=$D/variants/etc-plus_no-probes.json calls=8,10,13,17,25;\
etc-plus:profile=$D/variants/etc-plus_fitted-gains.json calls=8,10,13,17,25"
