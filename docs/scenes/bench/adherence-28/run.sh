#!/usr/bin/env bash
# Prompt adherence at 2x-4x on the scenes model at 28 steps (FLUX's default step count in diffusers), over 48 images:
# the 8 held-out captions of ../evaluation_prompts.txt at seeds 0-5. Every method is calibrated on the model's
# calibration captions (../calibration_prompts.txt, seed 42) at 28 steps with its defaults, into profiles/.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
D=docs/scenes/bench
O=$D/adherence-28
export ETCDIFF_PROFILE_DIR=$O/profiles
P=$ETCDIFF_PROFILE_DIR
CAL="--model demo --prompts $D/calibration_prompts.txt --seed 42 --steps 28 --quiet --out $P --no-plot"
[ -f "$P/scenes_28steps_etc-plus.json" ] || etcdiff calibrate $CAL --method etc-plus
for c in 9 7; do
  [ -f "$P/meancache_$c.json" ] || { etcdiff calibrate $CAL --method meancache --set calls=$c && mv "$P/scenes_28steps_meancache.json" "$P/meancache_$c.json"; }
done
for t in 0.2 0.3 0.4 0.5 0.7; do
  [ -f "$P/ertacache_$t.json" ] || { etcdiff calibrate $CAL --method ertacache --threshold $t && mv "$P/scenes_28steps_ertacache.json" "$P/ertacache_$t.json"; }
done
etcdiff bench --model demo --prompts $D/evaluation_prompts.txt --seeds 0,1,2,3,4,5 --steps 28 --repeats 1 --threads 1 \
  --no-progress --out $O --settings "etc-plus:calls=14,9,7;fixed:interval=3,4;\
ertacache:profile=$P/ertacache_0.2.json,$P/ertacache_0.3.json,$P/ertacache_0.4.json,$P/ertacache_0.5.json,$P/ertacache_0.7.json;\
meancache:profile=$P/meancache_9.json,$P/meancache_7.json"
