#!/usr/bin/env bash
# The step-level methods of the front table on the scenes model at more noise seeds: the same 8 held-out captions,
# profiles and settings as run.sh (seed 0), which must have run first (its profiles).
# Usage: bash docs/scenes/bench/more_seeds.sh SEEDS FOLDER   (SEEDS comma-separated, FOLDER under docs/scenes/bench)
# Two processes of one thread each (2 CPU cores); about 12 minutes per seed.
set -euo pipefail
cd "$(dirname "$0")/../../.."
D=docs/scenes/bench
P=$D/profiles
export ETCDIFF_PROFILE_DIR=$P
source $D/step_settings.sh
torchrun --nproc_per_node 2 -m etcdiff bench --model demo --prompts $D/evaluation_prompts.txt --seeds "$1" \
  --steps 50 --repeats 1 --no-progress --out "$D/$2" --settings "$STEP_SETTINGS"
