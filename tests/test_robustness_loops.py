"""The step hook on every loop shape and after every interruption (issue 9, step-level part).

Schedules are ETC with a huge threshold and warm-up 2, worked out by hand in ``test_hook_pipelines.py``:
12 steps: 0 1 2 4 7 11; 8 steps: 0 1 2 4 7; 6 steps: 0 1 2 4 5 (step 5 is the last, always real);
5 steps: 0 1 2 4 (step 3 estimated, k = 1; step 4 the last).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from diffusers import EDMEulerScheduler, FlowMatchEulerDiscreteScheduler, HeunDiscreteScheduler, KDPM2DiscreteScheduler, PNDMScheduler

import etcdiff
from loop_pipelines import make_loop_pipeline
from tiny_pipelines import FACTORIES

ETC_HUGE = {12: [0, 1, 2, 4, 7, 11], 8: [0, 1, 2, 4, 7], 6: [0, 1, 2, 4, 5], 5: [0, 1, 2, 4]}


def etc_huge() -> etcdiff.ETC:
    return etcdiff.ETC(threshold=1e9, warmup=2)


class Boom(Exception):
    pass


def _capture_call(module: torch.nn.Module) -> dict:
    """Arguments of the module's next call, to call it directly afterwards."""
    seen: dict = {}

    def grab(mod, args, kwargs):
        if "args" not in seen:
            seen.update(args=args, kwargs=kwargs)

    handle = module.register_forward_pre_hook(grab, with_kwargs=True)
    seen["handle"] = handle
    return seen


def _entry_counter(module: torch.nn.Module) -> list[int]:
    runs = [0]
    module.register_forward_pre_hook(lambda m, a: runs.__setitem__(0, runs[0] + 1))
    return runs


# -- 1. a stopped generation ends the generation -----------------------------------------------------------------
@pytest.mark.parametrize("how", ["exception", "keyboard_interrupt", "pipe_interrupt"])
def test_stopped_generation_leaves_no_stale_state(how: str) -> None:
    tp = FACTORIES["sd3"]()  # sets no cache_context
    etcdiff.enable(tp.pipe, etc_huge())
    tp.run(12)
    seen = _capture_call(tp.model)
    real = _entry_counter(tp.model.get_submodule(tp.entry_module))

    def at_step_end(i: int) -> None:
        if i == 4:  # step 5 would be estimated
            if how == "pipe_interrupt":
                tp.pipe._interrupt = True
            else:
                raise Boom if how == "exception" else KeyboardInterrupt

    if how == "pipe_interrupt":
        tp.run(12, **tp.step_end_kwargs(at_step_end))
        report = etcdiff.last_report(tp.pipe)
        assert report.num_steps == 5 and report.computed_steps == ETC_HUGE[5][:3] + [4]
        assert report.model_calls == 4
    else:
        with pytest.raises(Boom if how == "exception" else KeyboardInterrupt):
            tp.run(12, **tp.step_end_kwargs(at_step_end))
        with pytest.raises(RuntimeError, match="no generation has finished"):
            etcdiff.last_report(tp.pipe)  # not the previous run's report
    seen["handle"].remove()
    before = real[0]
    with torch.no_grad():
        direct = tp.model(*seen["args"], **seen["kwargs"])[0]
    assert real[0] == before + 1  # the model ran: no stale estimate
    etcdiff.disable(tp.pipe)
    with torch.no_grad():
        assert torch.equal(direct, tp.model(*seen["args"], **seen["kwargs"])[0])


def test_replaced_scheduler_after_a_stopped_generation() -> None:
    tp = FACTORIES["sd3"]()
    etcdiff.enable(tp.pipe, etc_huge())

    def at_step_end(i: int) -> None:
        if i == 4:
            raise Boom

    with pytest.raises(Boom):
        tp.run(12, **tp.step_end_kwargs(at_step_end))
    tp.pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(tp.pipe.scheduler.config)
    real = _entry_counter(tp.model.get_submodule(tp.entry_module))
    out = tp.run(12)
    report = etcdiff.last_report(tp.pipe)
    assert report.computed_steps == ETC_HUGE[12] and real[0] == 6
    fresh = FACTORIES["sd3"]()
    etcdiff.enable(fresh.pipe, etc_huge())
    assert torch.equal(out, fresh.run(12))


# -- 2. loops that cover fewer steps than the scheduler holds -----------------------------------------------------
def test_sdxl_denoising_end_last_step_real_and_report_final() -> None:
    tp = FACTORIES["sdxl"]()
    etcdiff.enable(tp.pipe, etc_huge())
    tp.run(8)
    steps = [0]
    real = _entry_counter(tp.model.get_submodule(tp.entry_module))
    tp.run(12, denoising_end=0.5, **tp.step_end_kwargs(lambda i: steps.__setitem__(0, i + 1)))
    report = etcdiff.last_report(tp.pipe)
    assert steps[0] == 5  # SDXL's loop stops after 5 of the 12 timesteps
    assert report.num_steps == 5 and report.computed_steps == ETC_HUGE[5]  # the last step it runs is real
    assert report.model_calls == real[0] == 4


def test_loop_stopping_early_on_a_hand_made_pipeline() -> None:
    pipe = make_loop_pipeline()
    etcdiff.enable(pipe, etc_huge())
    pipe(12, denoising_end=0.5)
    report = etcdiff.last_report(pipe)
    assert report.num_steps == 6 and report.computed_steps == ETC_HUGE[6] and pipe.transformer.runs == 5


# -- 3. Cosmos: two scheduler.step calls per step ------------------------------------------------------------------
def test_cosmos_two_scheduler_steps_count_as_one() -> None:
    want = make_loop_pipeline(EDMEulerScheduler())(12, loop="cosmos", cfg=True)
    pipe = make_loop_pipeline(EDMEulerScheduler())
    etcdiff.enable(pipe, etcdiff.NoCache())
    assert torch.equal(pipe(12, loop="cosmos", cfg=True), want)
    etcdiff.enable(pipe, etc_huge())
    pipe.transformer.runs = 0
    pipe(12, loop="cosmos", cfg=True)
    report = etcdiff.last_report(pipe)
    assert report.num_steps == 12 and report.computed_steps == ETC_HUGE[12]
    assert report.model_calls == pipe.transformer.runs == 2 * 6


# -- 4. Wan 2.2: the trend belongs to the branch, not to the expert -----------------------------------------------
def test_second_expert_continues_the_trend() -> None:
    pipe = make_loop_pipeline(two_experts=True)
    etcdiff.enable(pipe, etc_huge())
    pipe(12, cfg=True, boundary=500.0)  # timesteps 1000 .. 83: the switch comes half-way
    report = etcdiff.last_report(pipe)
    assert report.computed_steps == ETC_HUGE[12]
    assert pipe.transformer.runs + pipe.transformer_2.runs == report.model_calls == 2 * 6
    assert pipe.transformer_2.runs > 0


def test_wan22_two_experts() -> None:
    import copy

    from diffusers import WanPipeline

    tp = FACTORIES["wan"]()
    parts = {k: v for k, v in tp.pipe.components.items()}
    parts["transformer_2"] = copy.deepcopy(parts["transformer"])
    pipe = WanPipeline(**parts, boundary_ratio=0.5)
    pipe.set_progress_bar_config(disable=True)
    calls = {"transformer": 0, "transformer_2": 0}
    for name in calls:
        getattr(pipe, name).patch_embedding.register_forward_pre_hook(
            lambda m, a, name=name: calls.__setitem__(name, calls[name] + 1))
    etcdiff.enable(pipe, etc_huge())
    tp.call(pipe, 12)
    report = etcdiff.last_report(pipe)
    assert report.computed_steps == ETC_HUGE[12]
    assert calls["transformer_2"] > 0 and sum(calls.values()) == report.model_calls == 2 * 6


# -- 5. helper networks are skipped with the denoiser -------------------------------------------------------------
def test_controlnet_skipped_with_the_denoiser() -> None:
    want = make_loop_pipeline(controlnet=True)(12, cfg=True)
    pipe = make_loop_pipeline(controlnet=True)
    etcdiff.enable(pipe, etcdiff.NoCache())
    assert torch.equal(pipe(12, cfg=True), want)
    etcdiff.enable(pipe, etc_huge())
    pipe.transformer.runs = pipe.controlnet.runs = 0
    pipe(12, cfg=True)
    report = etcdiff.last_report(pipe)
    assert report.computed_steps == ETC_HUGE[12]
    assert pipe.controlnet.runs == 6 and pipe.transformer.runs == 12
    assert report.model_calls == 6 + 12
    etcdiff.disable(pipe)
    assert "forward" not in vars(pipe.controlnet) and not hasattr(pipe.controlnet, "_diffusers_hook")


def test_sd_controlnet_pipeline_skips_the_controlnet() -> None:
    from tiny_pipelines import make_sd_controlnet

    want = make_sd_controlnet().run(12)
    tp = make_sd_controlnet()
    unet_runs = _entry_counter(tp.model.get_submodule(tp.entry_module))
    cn_runs = _entry_counter(tp.pipe.controlnet.conv_in)
    etcdiff.enable(tp.pipe, etcdiff.NoCache())
    assert torch.equal(tp.run(12), want)
    assert unet_runs[0] == cn_runs[0] == 12
    etcdiff.enable(tp.pipe, etc_huge())
    unet_runs[0] = cn_runs[0] = 0
    out = tp.run(12)
    report = etcdiff.last_report(tp.pipe)
    assert report.computed_steps == ETC_HUGE[12] and unet_runs[0] == cn_runs[0] == 6
    assert report.model_calls == 12 and torch.isfinite(out).all()
    etcdiff.disable(tp.pipe)
    assert torch.equal(tp.run(12), want)


# -- 7. a replaced denoiser is followed --------------------------------------------------------------------------
def test_report_after_the_transformer_is_replaced() -> None:
    pipe = make_loop_pipeline()
    etcdiff.enable(pipe, etc_huge())
    pipe(12)
    old = pipe.transformer
    pipe.transformer = make_loop_pipeline().transformer
    pipe(12)
    report = etcdiff.last_report(pipe)
    assert report.computed_steps == ETC_HUGE[12] and pipe.transformer.runs == report.model_calls == 6
    assert "forward" not in vars(old) and not hasattr(old, "_diffusers_hook")
    etcdiff.disable(pipe)
    assert "forward" not in vars(pipe.transformer)


# -- 8 / pickle. copies are independent and enabled ----------------------------------------------------------------
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copy_of_an_enabled_pipeline(how: str) -> None:
    import copy
    import pickle

    pipe = make_loop_pipeline()
    policy = etcdiff.enable(pipe, etc_huge())
    want = pipe(12)
    dup = copy.deepcopy(pipe) if how == "deepcopy" else pickle.loads(pickle.dumps(pipe))
    assert type(dup).__name__ == "LoopPipeline" and etcdiff.is_enabled(dup)
    assert dup.scheduler is not pipe.scheduler and dup.transformer is not pipe.transformer
    dup.transformer.runs = pipe.transformer.runs = 0
    assert torch.equal(dup(12), want)
    assert dup.transformer.runs == 6 and pipe.transformer.runs == 0
    assert etcdiff.last_report(dup).computed_steps == ETC_HUGE[12]
    assert etcdiff.enable(dup, etcdiff.NoCache()) is not policy
    assert torch.equal(pipe(12), want) and etcdiff.last_report(pipe).computed_steps == ETC_HUGE[12]
    etcdiff.disable(pipe)
    assert type(pipe).__name__ == "LoopPipeline" and "_etcdiff_base_class" not in vars(type(pipe))
    pickle.dumps(pipe)  # the plain pipeline pickles as before


# -- 9. multi-evaluation schedulers: one timestep = one step ------------------------------------------------------
@pytest.mark.parametrize("scheduler_cls", [HeunDiscreteScheduler, KDPM2DiscreteScheduler])
def test_multi_evaluation_scheduler_counts_steps_as_requested(scheduler_cls) -> None:
    tp = FACTORIES["sdxl"]()
    tp.pipe.scheduler = scheduler_cls.from_config(tp.pipe.scheduler.config)
    real = _entry_counter(tp.model.get_submodule(tp.entry_module))
    want = tp.run(8)
    assert real[0] == 15  # two evaluations per step, one for the first
    etcdiff.enable(tp.pipe, etcdiff.NoCache())
    assert torch.equal(tp.run(8), want)
    etcdiff.enable(tp.pipe, etc_huge())
    real[0] = 0
    tp.run(8)
    report = etcdiff.last_report(tp.pipe)
    assert report.num_steps == 8 and report.computed_steps == ETC_HUGE[8]
    assert report.model_calls == real[0] == 2 * 4 + 1  # both evaluations of 0 1 2 4, the one of the last step


def test_pndm_runge_kutta_warm_up_warns() -> None:
    pipe = make_loop_pipeline(PNDMScheduler(skip_prk_steps=False))
    etcdiff.enable(pipe, etcdiff.NoCache())
    with pytest.warns(UserWarning, match="Runge-Kutta"):
        pipe(12)
    pipe = make_loop_pipeline(PNDMScheduler(skip_prk_steps=True))
    etcdiff.enable(pipe, etcdiff.NoCache())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        pipe(12)


# -- 10. multi-pass loops --------------------------------------------------------------------------------------------
def test_report_covers_every_pass() -> None:
    pipe = make_loop_pipeline()
    etcdiff.enable(pipe, etc_huge())
    pipe(12, passes=3)
    report = etcdiff.last_report(pipe)
    assert report.passes == 3 and report.num_steps == 36
    assert report.computed_steps == ETC_HUGE[12] + [12 + s for s in ETC_HUGE[12]] + [24 + s for s in ETC_HUGE[12]]
    assert report.model_calls == pipe.transformer.runs == 18


# -- recording for calibration counts steps the same way ------------------------------------------------------------
@pytest.mark.parametrize(
    "scheduler, kwargs, steps",
    [(None, {}, 12), (EDMEulerScheduler(), {"loop": "cosmos", "cfg": True}, 12), (HeunDiscreteScheduler(), {}, 12),
     (None, {"denoising_end": 0.5}, 6)],
    ids=["plain", "cosmos", "heun", "denoising_end"],
)
def test_recording_counts_steps_like_the_hook(scheduler, kwargs, steps) -> None:
    from etcdiff.integration.step.recording import record_pipeline

    pipe = make_loop_pipeline(scheduler) if scheduler is not None else make_loop_pipeline()
    traj, out = record_pipeline(pipe, num_inference_steps=12, **kwargs)
    assert traj.num_steps == len(traj.inputs) == steps
    assert torch.equal(traj.final, out)
    # x_0 is the initial noise (Cosmos' first scheduler.step sees a doubled batch; Heun's second one x_1's guess)
    x0 = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0)) * getattr(pipe.scheduler, "init_noise_sigma", 1.0)
    assert torch.equal(traj.inputs[0], x0)
    assert all(o.shape == out.shape and i.shape == out.shape for o, i in zip(traj.outputs, traj.inputs))
    assert not pipe.transformer._forward_pre_hooks and "set_timesteps" not in vars(pipe.scheduler)
