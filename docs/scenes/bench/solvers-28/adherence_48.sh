#!/usr/bin/env bash
# Prompt adherence at 28 steps under UniPC and DPM-Solver++ over 48 held-out images (the 8 evaluation captions at
# seeds 0-5; run.sh used seeds 0-1): ETC+ with and without the opt-in `adapt_trend=true`, fixed reuse and ERTACache,
# with run.sh's profiles (MeanCache, 19-26 dB at 3x-4x in run.sh, is left out). Outputs in <scheduler>-48/.
# Usage: bash docs/scenes/bench/solvers-28/adherence_48.sh [SCHEDULER ...]   (default: unipc dpm)
set -euo pipefail
cd "$(dirname "$0")/../../../.."
D=docs/scenes/bench
O=$D/solvers-28
P=$O/profiles
for S in ${@:-unipc dpm}; do
  F=$P/$S/scenes_28steps_etc-plus.json
  E=$P/$S/ertacache
  etcdiff bench --model demo --scheduler "$S" --prompts $D/evaluation_prompts.txt --seeds 0,1,2,3,4,5 --steps 28 \
    --repeats 1 --threads 1 --no-progress --out "$O/$S-48" --settings "etc-plus:profile=$F calls=14,9,7;\
etc-plus:profile=$F calls=14,9,7 adapt_trend=true;fixed:interval=2,3,4;\
ertacache:profile=${E}_0.2.json,${E}_0.3.json,${E}_0.5.json,${E}_0.7.json"
done
