#!/usr/bin/env bash
# run.sh's profile (ETC+ calibrated with `--set adapt_trend=true`) on the second draw of 48 held-out images of
# ../adapt-trend/seeds-6-11.sh (the 8 evaluation captions at seeds 6-11), whose folder holds the other methods on
# the same images: what calibration chose, and the same profile with adapt_trend=false.
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
D=docs/scenes/bench
O=$D/adherence-28/adapt-choice
F=$O/profiles/scenes_28steps_etc-plus.json
etcdiff bench --model demo --prompts $D/evaluation_prompts.txt --seeds 6,7,8,9,10,11 --steps 28 --repeats 1 --threads 1 \
  --no-progress --out $O/seeds-6-11 --settings "etc-plus:profile=$F calls=9,7;etc-plus:profile=$F calls=9,7 adapt_trend=false"
