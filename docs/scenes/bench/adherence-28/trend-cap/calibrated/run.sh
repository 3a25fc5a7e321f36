#!/usr/bin/env bash
# ETC+ calibrated with and without `trend_caps=true` (this round's code, the same calibration captions and seed as
# ../../run.sh), measured on the same 48 held-out images (8 evaluation captions x seeds 0-5, 28 Euler steps).
set -euo pipefail
cd "$(dirname "$0")/../../../../../.."
D=docs/scenes/bench
O=$D/adherence-28/trend-cap/calibrated
P=$O/profiles
CAL="--model demo --prompts $D/calibration_prompts.txt --seed 42 --steps 28 --quiet --out $P --no-plot --method etc-plus"
[ -f "$P/etc-plus_default.json" ] || { etcdiff calibrate $CAL && mv "$P/scenes_28steps_etc-plus.json" "$P/etc-plus_default.json"; }
[ -f "$P/etc-plus_trend_caps.json" ] || { etcdiff calibrate $CAL --set trend_caps=true && mv "$P/scenes_28steps_etc-plus.json" "$P/etc-plus_trend_caps.json"; }
rm -f $P/*.png
etcdiff bench --model demo --prompts $D/evaluation_prompts.txt --seeds 0,1,2,3,4,5 --steps 28 --repeats 1 --threads 1 \
  --no-progress --out $O --settings "etc-plus:profile=$P/etc-plus_default.json,$P/etc-plus_trend_caps.json calls=14,9,7"
