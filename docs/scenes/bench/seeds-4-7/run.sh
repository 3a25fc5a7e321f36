#!/usr/bin/env bash
# The step-level methods of the front table at four more noise seeds (4, 5, 6, 7); see ../more_seeds.sh.
# Added after seeds 0-3 left ETC+ and ERTACache within 0.4 dB of each other, with ERTACache ahead at 3x and 5x:
# four more draws of the noise, the same captions, nothing refitted. `python scripts/front_table.py
# docs/scenes/bench/results.json docs/scenes/bench/seeds-1-3/results.json docs/scenes/bench/seeds-4-7/results.json
# --by-seed` pools the eight seeds (64 images) and prints each seed alone. About 50 minutes.
exec bash "$(dirname "$0")/../more_seeds.sh" 4,5,6,7 seeds-4-7
