#!/usr/bin/env bash
# The step-level methods of the front table at three more noise seeds (1, 2, 3); see ../more_seeds.sh.
# Every image of one seed starts from the same noise, so one seed is one draw of the noise however many captions
# it has; `python scripts/front_table.py docs/scenes/bench/results.json docs/scenes/bench/seeds-1-3/results.json
# --by-seed` pools the four seeds (32 images) and prints each seed alone. About 35 minutes.
exec bash "$(dirname "$0")/../more_seeds.sh" 1,2,3 seeds-1-3
