#!/usr/bin/env bash
# The same three profiles per scheduler as run.sh (default, replays with the push, this folder's), benched at 25,
# 16 and 12 calls on 8 fresh captions (fresh_prompts.txt: grammar seed 20261205, none of them a calibration,
# evaluation or development caption) at seeds 0-1, made after the rule was fixed: images nothing here saw.
# Usage: bash docs/scenes/bench/solvers-50/replays/default-first/fresh.sh [SCHEDULER ...]   (default: euler); outputs in fresh/SCHEDULER/.
set -euo pipefail
cd "$(dirname "$0")/../../../../../.."
R=docs/scenes/bench/solvers-50/replays
O=$R/default-first
for S in ${@:-euler}; do
  SET="etc-plus:profile=$R/profiles/default/scenes_50steps_${S}_etc-plus.json calls=25,16,12"
  SET="$SET;etc-plus:profile=$R/push/profiles/scenes_50steps_${S}_etc-plus.json calls=25,16,12"
  SET="$SET;etc-plus:profile=$O/profiles/scenes_50steps_${S}_etc-plus.json calls=25,16,12"
  etcdiff bench --model demo --scheduler "$S" --prompts $O/fresh_prompts.txt --seeds 0,1 --steps 50 \
    --repeats 1 --threads 1 --no-progress --out "$O/fresh/$S" --settings "$SET"
done
