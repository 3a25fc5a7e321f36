#!/usr/bin/env bash
# ../run.sh with its outputs here and `--set replay_offsets=true`: ETC+'s replayed calibration with the pull's real
# runs spread over the three `corrections` candidates and each one's replays shifted by its offset, on the held-out
# UNet digits model, benched beside the default calibration's profiles (../../profiles) on
# the same held-out images (digits 5-9 at seeds 0 and 1) at S/2, S/3 and S/4 calls.
# Usage: bash docs/unet-digits/replays/offsets/run.sh [MODEL:SOLVER [STEPS]]   (as ../run.sh); outputs in
# SOLVER-STEPSsteps/, profiles in profiles/.
set -euo pipefail
OUT=docs/unet-digits/replays/offsets EXTRA="--set replay_offsets=true" exec bash "$(dirname "$0")/../run.sh" "$@"
