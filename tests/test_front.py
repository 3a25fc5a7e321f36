"""The speed-fidelity front read at a speedup: best point at or past it, or the line between Pareto points."""

import pytest

from etcdiff.bench.front import front_at


def test_front_reads_points_and_lines_between_pareto_points():
    pts = [(2.0, 60.0), (3.0, 54.0), (5.0, 40.0)]
    assert front_at(pts, 2.0) == 60.0
    assert front_at(pts, 4.0) == pytest.approx(47.0)  # the line from (3, 54) to (5, 40)
    assert front_at(pts, 6.0) is None  # no setting got there
    # A point above the line at 4x lifts the front there; a dominated one (slower and worse than (4.2, 45))
    # changes nothing: measuring one more setting never lowers a method's front.
    assert front_at(pts + [(4.0, 50.0)], 4.0) == 50.0
    assert front_at(pts + [(4.2, 45.0), (3.9, 44.0)], 4.0) == pytest.approx(54.0 + (45.0 - 54.0) * 1.0 / 1.2)
