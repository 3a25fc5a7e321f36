"""The step method ``etc`` on tiny random-weight versions of many diffusers pipeline classes.

Each pipeline (built offline by :mod:`tiny_matrix_pipelines`) is checked three ways:

* ``ETC(threshold=0)`` never estimates a step, so the output is bit-identical to the plain pipeline's;
* ``ETC(threshold=1e9, warmup=2)`` follows the hand-worked schedule below, and the denoiser (every expert)
  and any helper network the pipeline runs per step (ControlNet) run exactly on the computed steps;
* after ``etcdiff.disable`` the output is bit-identical to the plain pipeline's again, and no attribute
  etcdiff set is left on the denoisers or the scheduler.

Forwards are counted independently of etcdiff, with plain torch forward pre-hooks: one on each denoiser module
(every call the pipeline makes, estimated or not) and one on a submodule that runs once per real forward.

``ETC(threshold=1e9, warmup=2)`` on N loop steps: steps 0 and 1 are warm-up; step 2 is real and the window
grows by one after every real step (every error passes the huge threshold), so step 3 is estimated, 4 real,
5 and 6 estimated, 7 real; the last step is always real. N is the number of steps the plain pipeline's loop
runs (img2img strength and ``denoising_start`` / ``denoising_end`` make it fewer than requested).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import etcdiff
from tiny_matrix_pipelines import MATRIX_FACTORIES, TinyPipeline

STEPS = 8
LCM_STEPS = 4
ETC_HUGE = {4: [0, 1, 2, 3], 5: [0, 1, 2, 4], 6: [0, 1, 2, 4, 5], 7: [0, 1, 2, 4, 6], 8: [0, 1, 2, 4, 7]}
DENOISERS = ("transformer", "transformer_2", "unet")
HELPERS = ("controlnet",)

XFAIL: dict[str, str] = {}  # every case of issue 9 passes since the step hook counts denoiser rounds


def _case(name: str) -> object:
    if name in XFAIL:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=XFAIL[name]))
    return name


CASES = [_case(n) for n in MATRIX_FACTORIES]


class Counts:
    """Calls of every denoiser and helper network, and the (pipeline) step of each real denoiser forward."""

    def __init__(self, tp: TinyPipeline) -> None:
        self.cps = tp.calls_per_step
        self.handles = []
        for name in DENOISERS:
            model = getattr(tp.pipe, name, None)
            if isinstance(model, torch.nn.Module):
                self.handles.append(model.register_forward_pre_hook(self._on_call))
                self.handles.append(model.get_submodule(tp.entry_module).register_forward_pre_hook(self._on_forward))
        for name in HELPERS:
            model = getattr(tp.pipe, name, None)
            if isinstance(model, torch.nn.Module):
                # the helper's own first layer: a skipped helper call never reaches it
                self.handles.append(model.get_submodule("conv_in").register_forward_pre_hook(self._on_helper))
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        self.forward_steps: list[int] = []
        self.helper_steps: list[int] = []

    def _on_call(self, module, args) -> None:
        self.calls += 1

    def _on_forward(self, module, args) -> None:
        self.forward_steps.append((self.calls - 1) // self.cps)

    def _on_helper(self, module, args) -> None:
        self.helper_steps.append(self.calls // self.cps)  # the helper runs before the denoiser call of its step

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _etcdiff_attrs(tp: TinyPipeline) -> dict[str, set[str]]:
    """Instance attributes a hook could leave behind: on each denoiser and on the scheduler."""
    out = {"scheduler": {n for n in ("set_timesteps", "step", "set_begin_index") if n in vars(tp.pipe.scheduler)}}
    for name in DENOISERS:
        model = getattr(tp.pipe, name, None)
        if isinstance(model, torch.nn.Module):
            out[name] = {n for n in ("forward", "_diffusers_hook") if n in vars(model)}
    return out


@pytest.mark.parametrize("name", CASES)
def test_etc_on_pipeline(name: str) -> None:
    tp = MATRIX_FACTORIES[name]()
    steps = LCM_STEPS if name == "lcm" else STEPS
    counts = Counts(tp)
    plain = tp.run(steps)
    before = _etcdiff_attrs(tp)  # after a plain run: pipelines that set a cache_context add a hook registry
    n = counts.calls // tp.calls_per_step
    assert counts.calls == n * tp.calls_per_step and n in ETC_HUGE

    # threshold 0: every step runs the model, the output is the plain one bit for bit
    etcdiff.enable(tp.pipe, etcdiff.ETC(threshold=0.0, warmup=2))
    counts.reset()
    assert torch.equal(tp.run(steps), plain)
    report = etcdiff.last_report(tp.pipe)
    assert report.num_steps == n and report.computed_steps == list(range(n))
    assert len(counts.forward_steps) == n * tp.calls_per_step

    # huge threshold: the hand-worked schedule; the denoiser(s) and helper networks run on computed steps only
    etcdiff.enable(tp.pipe, etcdiff.ETC(threshold=1e9, warmup=2))
    counts.reset()
    out = tp.run(steps)
    report = etcdiff.last_report(tp.pipe)
    expected = ETC_HUGE[n]
    assert counts.calls == n * tp.calls_per_step
    assert report.num_steps == n
    assert report.computed_steps == expected
    assert Counter(counts.forward_steps) == {s: tp.calls_per_step for s in expected}
    assert set(counts.helper_steps) <= set(expected)
    assert report.model_calls == len(counts.forward_steps) + len(counts.helper_steps)  # ControlNet forwards count
    assert out.shape == plain.shape and torch.isfinite(out).all()

    # disable: the pipeline is the plain one again, bit for bit
    etcdiff.disable(tp.pipe)
    assert _etcdiff_attrs(tp) == before
    assert torch.equal(tp.run(steps), plain)
    counts.remove()
