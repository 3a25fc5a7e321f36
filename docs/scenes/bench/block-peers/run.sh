#!/usr/bin/env bash
# The block-level peers of issue 26 (DiCache, H2-Cache, PromptTea) and diffusers' FasterCache and PAB on the embedded
# scenes model (`--model demo`, a small FLUX: 2 double + 3 single blocks), beside TeaCache as an anchor.
# Same protocol as ../run.sh: the 8 held-out evaluation captions at seed 0, 50 steps, true CFG 3.0; PromptTea is
# calibrated on the 10 calibration captions (seed 42) into ../profiles, where etcdiff.enable finds it.
# A reduced sweep (one seed, one timed repeat), run on a shared 2-core CPU.
# SeaCache (Wan text-to-video only in diffusers 0.42.1) and DeepCache (UNets) do not run on this model.
set -euo pipefail
cd "$(dirname "$0")/../../../.."
D=docs/scenes/bench
export ETCDIFF_PROFILE_DIR=$D/profiles
ETCDIFF="${ETCDIFF:-etcdiff}"
if [ ! -f "$ETCDIFF_PROFILE_DIR/scenes_50steps_prompttea.json" ]; then
  $ETCDIFF calibrate --model demo --prompts $D/calibration_prompts.txt --seed 42 --steps 50 --quiet \
    --out $ETCDIFF_PROFILE_DIR --method prompttea
fi
$ETCDIFF bench --model demo --prompts $D/evaluation_prompts.txt --seeds 0 --steps 50 --repeats 1 \
  --no-progress --out $D/block-peers --settings "teacache:threshold=0.2;\
dicache:threshold=0.2,0.4,0.8;h2cache:threshold=0.06,0.12,0.24;prompttea:threshold=0.1,0.23,0.46;\
diffusers-pab:;diffusers-fastercache:"
