"""DeepCache through the ``deepcache`` package on a tiny SD 1.5 pipeline built offline from configs.

The tiny UNet has two down blocks (``DownBlock2D``, ``CrossAttnDownBlock2D``), a mid block and two up blocks.
With ``cache_branch_id=0`` the skip branch is the shallowest one: on a cached step only ``conv_in``, the last up
block's last resnet and the output layers run; the deep blocks (down block 1, the mid block, the first up block)
return their stored outputs. With ``cache_interval=3`` on 8 DDIM steps the whole UNet runs at steps 0, 3 and 6.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import etcdiff
from etcdiff.integration.external import deepcache_adapter
from tiny_matrix_pipelines import make_sd15_ddim

pytest.importorskip("DeepCache")


class Runs:
    """Real forwards of a submodule per pipeline step (plain forward pre-hooks, one UNet call per step)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.step = -1
        self.steps: dict[str, list[int]] = {}
        self.handles = [unet.register_forward_pre_hook(self._next)]
        for name in ("conv_in", "down_blocks.0.resnets.0", "down_blocks.1.resnets.0", "mid_block.resnets.0",
                     "up_blocks.0.resnets.0", "up_blocks.1.resnets.0", "up_blocks.1.resnets.1"):
            self.steps[name] = []
            # a layer inside: the helper replaces the blocks' forward, so hooks on a block itself see cached calls too
            inner = unet.get_submodule(name if name == "conv_in" else f"{name}.conv1")
            self.handles.append(inner.register_forward_pre_hook(self._mark(name)))

    def _next(self, *_: object) -> None:
        self.step += 1

    def _mark(self, name: str):
        return lambda *_: self.steps[name].append(self.step)


def test_deepcache_skips_the_deep_branch_on_sd15():
    tp = make_sd15_ddim()
    unet = tp.pipe.unet
    plain = tp.run(8)
    runs = Runs(unet)
    etcdiff.enable(tp.pipe, "deepcache", cache_interval=1)  # every step refreshes: the plain output
    assert torch.equal(tp.run(8), plain)
    etcdiff.enable(tp.pipe, "deepcache", cache_interval=3, cache_branch_id=0)
    runs.step, runs.steps = -1, {k: [] for k in runs.steps}
    out = tp.run(8)
    every, full = list(range(8)), [0, 3, 6]
    assert runs.steps == {"conv_in": every, "down_blocks.0.resnets.0": full, "down_blocks.1.resnets.0": full,
                          "mid_block.resnets.0": full, "up_blocks.0.resnets.0": full, "up_blocks.1.resnets.0": full,
                          "up_blocks.1.resnets.1": every}
    report = etcdiff.last_report(tp.pipe)
    assert report.per_step_stack_runs == [1, 0, 0, 1, 0, 0, 1, 0] and report.probe.startswith("mid_block.")
    assert not torch.equal(out, plain) and torch.isfinite(out).all()
    # a second generation starts afresh (the helper's step origin and stored outputs are reset)
    runs.step, runs.steps = -1, {k: [] for k in runs.steps}
    assert torch.equal(tp.run(8), out)
    etcdiff.disable(tp.pipe)
    assert not any("forward" in vars(m) for m in unet.modules())
    assert torch.equal(tp.run(8), plain)
    with pytest.raises(ValueError, match="cache_branch_id must be below 6"):
        etcdiff.enable(tp.pipe, "deepcache", cache_branch_id=6)
    with pytest.raises(ValueError, match="skip_mode must be 'uniform'"):
        etcdiff.enable(tp.pipe, "deepcache", skip_mode="other")


def test_deepcache_missing_package_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(deepcache_adapter.importlib.util, "find_spec",
                        lambda name, *a: None if name == "DeepCache" else real(name, *a))
    tp = make_sd15_ddim()
    with pytest.raises(ImportError, match=r"deepcache package is not installed \(pip install 'etcdiff\[peers\]'"):
        etcdiff.enable(tp.pipe, "deepcache")
