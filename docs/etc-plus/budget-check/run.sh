#!/usr/bin/env bash
# The scenes model's two ladder misses at 50 steps (issue 25, item 2), checked on the plans the profiles run:
# each committed profile at the budgets around its miss, on its own 10 calibration prompts at their calibration
# seeds (42 + k), beside what calibration measured for the same held-out runs (scripts/etc_plus_budget_check.py).
set -euo pipefail
cd "$(dirname "$0")/../../.."
S=docs/scenes/bench
O=docs/etc-plus/budget-check
python scripts/etc_plus_budget_check.py --model demo --scheduler unipc --steps 50 --calls 10,11,15,16 \
  --profile $S/solvers-50/profiles/unipc/scenes_50steps_etc-plus.json --prompts $S/calibration_prompts.txt \
  --out $O/scenes-unipc-50.json
python scripts/etc_plus_budget_check.py --model demo --scheduler euler --steps 50 --calls 20,23 \
  --profile $S/solvers-50/profiles/euler/scenes_50steps_etc-plus.json --prompts $S/calibration_prompts.txt \
  --out $O/scenes-euler-50.json
