#!/usr/bin/env bash
# The step-level methods of the front table on the scenes model at three more noise seeds (1, 2, 3), the same 8
# held-out captions, profiles and settings as ../run.sh (seed 0), which must have run first (its profiles).
# Every image of one seed starts from the same noise, so one seed is one draw of the noise however many captions
# it has; `python scripts/front_table.py docs/bench-scenes/results.json docs/bench-scenes/seeds-1-3/results.json
# --by-seed` pools the four seeds (32 images) and prints each seed alone.
# Two processes of one thread each (2 CPU cores); about an hour.
set -euo pipefail
cd "$(dirname "$0")/../../.."
D=docs/bench-scenes
P=$D/profiles
export ETCDIFF_PROFILE_DIR=$P
source $D/step_settings.sh
torchrun --nproc_per_node 2 -m etcdiff bench --model demo --prompts $D/evaluation_prompts.txt --seeds 1,2,3 \
  --steps 50 --repeats 1 --no-progress --out $D/seeds-1-3 --settings "$STEP_SETTINGS"
