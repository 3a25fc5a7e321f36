"""The demo picture names the prompt of each column."""

from __future__ import annotations

import numpy as np

from etcdiff.cli import demo


def test_each_column_is_titled_with_its_prompt(tmp_path, monkeypatch):
    import matplotlib.figure

    titles: list[str] = []
    save = matplotlib.figure.Figure.savefig

    def keep_titles(fig, *a, **k):
        titles.extend(ax.get_title() for ax in fig.axes)
        return save(fig, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep_titles)
    prompts = ["a large red circle at the top left and a small blue square in the center", "a small green ring"]
    images = np.zeros((2, 8, 8, 3))
    result = {"prompts": prompts, "steps": 50, "model_calls": {"full": 100, "etc": 40}, "wallclock_speedup": 2.0,
              "psnr_db": {"mean": 40.0}, "ssim": {"mean": 0.99}}
    demo._side_by_side(images, images, tmp_path / "demo.png", result)
    named = [t.replace("\n", " ") for t in titles if t]
    assert named == prompts
