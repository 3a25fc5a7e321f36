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
torchrun --nproc_per_node 2 -m etcdiff bench --model demo --prompts $D/evaluation_prompts.txt --seeds 1,2,3 \
  --steps 50 --repeats 1 --no-progress --out $D/seeds-1-3 --settings "\
etc:;etc:threshold=0.1,0.2;\
etc-plus:;etc-plus:calls=8,10,12,13,17,25;\
ertacache:profile=$P/ertacache_0.1.json,$P/ertacache_0.2.json,$P/ertacache_0.3.json,$P/ertacache_0.4.json,$P/ertacache_0.5.json;\
meancache:calls=10,13,17,25;\
sencache:eps_start=0.05 eps_main=0.2 max_reuse=4;sencache:eps_start=0.1 eps_main=0.5 max_reuse=6;\
sencache:eps_start=0.2 eps_main=1.0 max_reuse=8;\
teacache:threshold=0.1,0.2,0.4,0.8;magcache:threshold=0.06,0.12,0.24,0.48;\
fixed:interval=2,3,4,5;linear:interval=2,3"
