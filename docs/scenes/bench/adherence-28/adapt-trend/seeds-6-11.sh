#!/usr/bin/env bash
# A second draw of 48 held-out images for run.sh's 3x-4x comparison: the same 8 evaluation captions at seeds 6-11
# (run.sh: seeds 0-5), with ETC+ (both profiles, with and without adapt_trend), fixed reuse every 4th step and
# ERTACache 0.4 / 0.7 (../profiles). Made after run.sh's figures, to see whether fixed reuse's lead at 9 calls there
# (one image) holds on other noise.
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
D=docs/scenes/bench
P=$D/adherence-28/profiles
T=$D/adherence-28/trend-cap/calibrated/profiles/etc-plus_trend_caps.json
export ETCDIFF_PROFILE_DIR=$P
etcdiff bench --model demo --prompts $D/evaluation_prompts.txt --seeds 6,7,8,9,10,11 --steps 28 --repeats 1 --threads 1 \
  --no-progress --out $D/adherence-28/adapt-trend/seeds-6-11 --settings "etc-plus:calls=9,7;\
etc-plus:calls=9,7 adapt_trend=true;etc-plus:profile=$T calls=9,7;etc-plus:profile=$T calls=9,7 adapt_trend=true;\
fixed:interval=4;ertacache:profile=$P/ertacache_0.4.json,$P/ertacache_0.7.json"
