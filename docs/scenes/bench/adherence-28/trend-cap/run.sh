#!/usr/bin/env bash
# ETC+ with its trend capped (opt-in `trend_cap`) against the same ETC+ uncapped, on the 48 held-out images of
# ../run.sh (the 8 evaluation captions at seeds 0-5, 28 FlowMatch Euler steps), with ../profiles' ETC+ profile.
# The caps and budgets were chosen on development captions (scripts/scenes_dev.py's set), never on these.
set -euo pipefail
cd "$(dirname "$0")/../../../../.."
D=docs/scenes/bench
export ETCDIFF_PROFILE_DIR=$D/adherence-28/profiles
etcdiff bench --model demo --prompts $D/evaluation_prompts.txt --seeds 0,1,2,3,4,5 --steps 28 --repeats 1 --threads 1 \
  --no-progress --out $D/adherence-28/trend-cap --settings "etc-plus:calls=14,9,7;etc-plus:calls=14,9,7 trend_cap=0.5,0"
