#!/usr/bin/env bash
# ETC+ with the trend weighed online after spikes (opt-in `adapt_trend=true`) against the same ETC+ without it, on
# the 48 held-out images of ../run.sh (the 8 evaluation captions at seeds 0-5, 28 FlowMatch Euler steps): with
# ../profiles' ETC+ profile (default calibration) and with ../trend-cap/calibrated's `trend_caps` profile.
# adapt_trend was designed on development captions (scripts/scenes_dev.py's set), never on these.
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
D=docs/scenes/bench
T=$D/adherence-28/trend-cap/calibrated/profiles/etc-plus_trend_caps.json
export ETCDIFF_PROFILE_DIR=$D/adherence-28/profiles
etcdiff bench --model demo --prompts $D/evaluation_prompts.txt --seeds 0,1,2,3,4,5 --steps 28 --repeats 1 --threads 1 \
  --no-progress --out $D/adherence-28/adapt-trend --settings "etc-plus:calls=14,9,7;\
etc-plus:calls=14,9,7 adapt_trend=true;etc-plus:profile=$T calls=14,9,7 adapt_trend=true"
