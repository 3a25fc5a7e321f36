#!/usr/bin/env bash
# ETC+ with and without the trend weighed after spikes (opt-in `adapt_trend=true`) under the multistep solvers, on
# run.sh's 16 held-out images (8 evaluation captions x seeds 0-1) with run.sh's ETC+ profiles (calibrated on the
# calibration captions, seed 42). Outputs go to $O/<scheduler>-adapt-trend; run.sh's folders hold the other methods.
# Usage: bash docs/scenes/bench/solvers-28/adapt_trend.sh [SCHEDULER ...]   (default: unipc dpm)
#        STEPS=20 bash docs/scenes/bench/solvers-28/adapt_trend.sh ...     (../solvers-20's profiles)
#        TREND_CAPS=1 STEPS=20 bash ... (the `trend_caps` profiles of ../solvers-20/<scheduler>-trend-caps instead)
set -euo pipefail
cd "$(dirname "$0")/../../../.."
D=docs/scenes/bench
STEPS=${STEPS:-28}
O=$D/solvers-$STEPS
P=$O/profiles
for S in ${@:-unipc dpm}; do
  B="calls=$((STEPS / 2)),$((STEPS / 3)),$((STEPS / 4))"
  F=$P/$S/scenes_${STEPS}steps_etc-plus.json
  OUT=$O/$S-adapt-trend
  if [ -n "${TREND_CAPS:-}" ]; then
    F=$O/$S-trend-caps/profiles/scenes_${STEPS}steps_etc-plus_trend_caps.json
    OUT=$O/$S-trend-caps-adapt-trend
  fi
  etcdiff bench --model demo --scheduler "$S" --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps $STEPS --repeats 1 \
    --threads 1 --no-progress --out "$OUT" --settings "etc-plus:profile=$F $B;etc-plus:profile=$F $B adapt_trend=true"
done
