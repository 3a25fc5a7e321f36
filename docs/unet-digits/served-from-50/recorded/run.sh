#!/usr/bin/env bash
# ../run.sh with `--set serve_recorded=true`: one ETC+ calibration at 50 steps per solver serving 20 and 28 steps
# from real full runs at each, benched beside the surrogate-served profiles of ../ and the native ones (README.md).
# Usage: bash docs/unet-digits/served-from-50/recorded/run.sh [MODEL:SOLVER ...]
SERVE_RECORDED=1 exec bash "$(dirname "$0")/../run.sh" "$@"
