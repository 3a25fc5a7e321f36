"""ETC+'s calibration: probe runs, replays of the recorded runs, and the checks after the choice."""
