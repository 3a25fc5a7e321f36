#!/usr/bin/env bash
# ERTACache at more thresholds on the 16 images of this folder's benches (the 8 held-out captions at seeds 0-1, 50
# steps), calibrated as the bench's other profiles, into SCHEDULER-ertacache-dense/. A later run with more
# thresholds into the same folder reuses the runs already made there.
# Usage: bash docs/scenes/bench/solvers-50/ertacache-dense.sh SCHEDULER THRESHOLD [THRESHOLD ...]
#        (as run: euler 0.1 0.15; unipc 0.35 0.4 0.1 0.15; dpm 0.35 0.4 0.45 0.1 0.15)
set -euo pipefail
cd "$(dirname "$0")/../../../.."
S=$1; shift
D=docs/scenes/bench; STEPS=50; O=$D/solvers-$STEPS
export ETCDIFF_PROFILE_DIR=$O/profiles
P=$ETCDIFF_PROFILE_DIR
CAL="--model demo --scheduler $S --prompts $D/calibration_prompts.txt --seed 42 --steps $STEPS --quiet --out $P --no-plot"
SET=""
for t in "$@"; do
  [ -f "$P/$S/ertacache_$t.json" ] || { etcdiff calibrate $CAL --method ertacache --threshold "$t" && \
    mv "$P/scenes_${STEPS}steps_${S}_ertacache.json" "$P/$S/ertacache_$t.json"; }
  SET="$SET,$P/$S/ertacache_$t.json"
done
etcdiff bench --model demo --scheduler "$S" --prompts $D/evaluation_prompts.txt --seeds 0,1 --steps $STEPS --repeats 1 \
  --threads 1 --no-progress --out "$O/$S-ertacache-dense" --settings "ertacache:profile=${SET#,}"
