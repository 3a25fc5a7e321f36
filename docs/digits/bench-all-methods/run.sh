#!/usr/bin/env bash
# Regenerates docs/digits/bench-all-methods: every method on the embedded demo model, 50 steps, the ten digits x seeds 0,1,2.
# Two processes on a CPU-only machine; drop `accelerate launch ...` for one process (`etcdiff bench ...`).
set -euo pipefail
cd "$(dirname "$0")/../../.."
P=docs/digits/bench-all-methods/profiles
accelerate launch --multi_gpu --num_processes 2 -m etcdiff bench --model demo --prompts demo --seeds 0,1,2 \
  --steps 50 --repeats 1 --threads 1 --no-progress --out docs/digits/bench-all-methods \
  --settings "etc:threshold=0.03,0.05,0.0654,0.1;\
fixed:interval=2,3,4;\
adaptive:threshold=0.005,0.01,0.05;\
sada:max_interval=2,4,6;\
ertacache:profile=$P/ertacache_0.1.json,$P/ertacache_0.2.json,$P/ertacache_0.5.json;\
teacache:threshold=0.05,0.1,0.2;\
magcache:threshold=0.06,0.12,0.24;\
diffusers-fbc:threshold=0.05,0.1,0.2;\
diffusers-magcache:threshold=0.06,0.12,0.24;\
diffusers-taylorseer:cache_interval=2,3,5;\
cache-dit:residual_diff_threshold=0.08,0.16,0.24"
