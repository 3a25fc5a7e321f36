"""One way to select any method: ``etcdiff.enable(pipe, "name", **settings)``, and ``--method`` in the CLI.

Three kinds run under this one interface:
- ``step``: a :class:`~etcdiff.policies.base.StepPolicy` decides per step whether the denoiser runs and
  predicts its whole output otherwise (ETC and the step-wise peers);
- ``block``: a block-level rule reuses the residual of the transformer blocks (TeaCache, MagCache);
- ``external``: a real peer run as it ships (diffusers' cache hooks, cache-dit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .policies import ETC, STEP_POLICIES, StepPolicy, find_preset, make_policy


@dataclass(frozen=True)
class MethodInfo:
    name: str
    kind: str  # "step" | "block" | "external"
    source: str
    reuses: str
    calibration: str


METHODS: dict[str, MethodInfo] = {m.name: m for m in (
    MethodInfo("etc", "step", "ETC, Error-aware Trend Consistency (this project; spec ETC.md)",
               "whole output, predicted by a consistent trend over a dynamic window",
               "tau per model: `etcdiff calibrate`, or a published preset"),
    MethodInfo("none", "step", "full-step reference", "nothing", "no"),
    MethodInfo("fixed", "step", "fixed-interval reuse (baseline)", "whole output, unchanged", "no"),
    MethodInfo("adaptive", "step", "AdaptiveDiffusion (Ye et al. 2024)",
               "whole output, unchanged; skips by a third-order latent difference", "no (threshold 0.01)"),
    MethodInfo("sada", "step", "SADA (Jiang et al. 2025), step-wise part",
               "whole output with x0 extrapolation; skips by drift stability", "no"),
    MethodInfo("ertacache", "step", "ERTACache (reconstruction of its three named parts)",
               "whole output with timestep and residual-linearization corrections",
               "yes: offline profile, `etcdiff calibrate --method ertacache`"),
    MethodInfo("meancache", "step", "MeanCache (Gao et al. 2026); schedule search is ours (not released)",
               "whole output, average-velocity estimate on a fixed schedule of B calls (flow-matching Euler only)",
               "yes: schedule per model and budget from full calibration runs"),
    MethodInfo("sencache", "step", "SenCache (Haghighi & Alahi 2026), step-level",
               "whole output, unchanged; reuses while a sensitivity bound stays under eps (shared batch decision)",
               "yes: J_x, J_t tables from calibration runs with extra forwards"),
    MethodInfo("teacache", "block", "TeaCache (Liu et al. 2025)",
               "residual of the transformer blocks; skips by the modulated input's change",
               "coefficients per model (published for FLUX, Wan); `etcdiff calibrate --method teacache`"),
    MethodInfo("magcache", "block", "MagCache (Ma et al. 2025)",
               "residual of the transformer blocks; skips by accumulated magnitude-ratio error",
               "ratios per model (published for FLUX); `etcdiff calibrate --method magcache`"),
    MethodInfo("diffusers-fbc", "external", "diffusers FirstBlockCache, as shipped",
               "residual of blocks 2..L when block 1's residual barely changes", "no (threshold 0.05)"),
    MethodInfo("diffusers-magcache", "external", "diffusers MagCache, as shipped",
               "residual of the transformer blocks", "ratios (FLUX built in; diffusers' calibrate=True)"),
    MethodInfo("diffusers-taylorseer", "external", "diffusers TaylorSeer cache, as shipped",
               "attention outputs, Taylor-extrapolated", "no (interval 5, order 1)"),
    MethodInfo("cache-dit", "external", "cache-dit DBCache, as shipped",
               "residual of the middle blocks (first Fn blocks always run)", "no"),
)}


def method_info(name: str) -> MethodInfo:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}; choose one of: {', '.join(METHODS)}.") from None


def model_identity(pipe: Any) -> str | None:
    """The hub id or local path a pipeline was loaded from, where diffusers recorded it."""
    config = getattr(pipe, "config", None)
    name = getattr(config, "_name_or_path", None) if config is not None else None
    return name or getattr(pipe, "name_or_path", None)


def resolve_policy(policy: StepPolicy | str, pipe: Any = None, **kwargs: Any) -> StepPolicy:
    """``policy`` as a step policy object.

    ``"etc"`` with no threshold takes, in order: the pipeline's calibration profile (``etcdiff calibrate``; the
    user's folder, then the profiles shipped with etcdiff), the published preset of a known model, or fails
    saying how to calibrate. ``"ertacache"`` with no profile takes the pipeline's saved one likewise.
    """
    if isinstance(policy, StepPolicy):
        if kwargs:
            raise ValueError(f"etcdiff: arguments {sorted(kwargs)} go with a method name, not with a policy object.")
        return policy
    if not isinstance(policy, str):
        raise TypeError(f"etcdiff: policy must be a StepPolicy or a method name, got {type(policy).__name__}.")
    if policy == "etc" and "threshold" not in kwargs:
        from .calibration.profile import find_profile, profile_identity

        ident = profile_identity(pipe) if pipe is not None else None
        profile = find_profile(ident) if ident else None
        if profile is not None and not kwargs:
            return ETC.from_profile(profile)
        if profile is not None:
            return ETC(threshold=profile.tau, **{"warmup": profile.warmup, "alpha": profile.alpha, **kwargs})
        preset = find_preset(model_identity(pipe) or "") if pipe is not None else None
        if preset is None:
            raise ValueError(
                f"etcdiff: no ETC threshold given, no calibration profile and no published preset for "
                f"{ident or type(pipe).__name__!r}. Pass threshold=..., use ETC.preset(name), or calibrate this "
                "model once with `etcdiff calibrate --model <id or path>` (or etcdiff.calibration.calibrate_pipeline)."
            )
        return ETC(threshold=preset.threshold, warmup=kwargs.pop("warmup", preset.warmup), **kwargs)
    if policy == "ertacache" and "profile" not in kwargs:
        kwargs["profile"] = _saved_settings(pipe, "ertacache")["profile"]
    if policy == "meancache" and "profile" not in kwargs and "schedule" not in kwargs:
        saved = _saved_settings(pipe, "meancache")
        kwargs["profile"] = saved["profile"]
        if kwargs.get("calls") is None and saved.get("calls") is not None:
            kwargs["calls"] = saved["calls"]  # the budget the calibration was asked for
    if policy == "sencache" and "tables" not in kwargs:
        kwargs["tables"] = _saved_settings(pipe, "sencache")["tables"]
    return make_policy(policy, **kwargs)


def _saved_settings(pipe: Any, method: str) -> dict[str, Any]:
    from .calibration.peer_profiles import find_peer_profile
    from .calibration.profile import profile_identity

    ident = profile_identity(pipe) if pipe is not None else None
    doc = find_peer_profile(ident, method) if ident else None
    if doc is None:
        raise ValueError(
            f"etcdiff: {method} needs an offline calibration of this model ({ident!r}) and none is saved; run "
            f"`etcdiff calibrate --model <id or path> --method {method}` once, or pass its settings explicitly."
        )
    return doc["settings"]


def enable(pipe: Any, method: Any = "etc", **settings: Any) -> Any:
    """Put any method on an unmodified diffusers pipeline; returns the policy, rule or peer config.

    ``method`` is a name from :data:`METHODS` with its settings (``enable(pipe, "teacache", threshold=0.4)``)
    or a policy/rule object (``enable(pipe, etcdiff.ETC(0.1))``). Whatever was enabled before is removed first.
    """
    from .integration import block_cache, diffusers_hook, external

    kind = _kind(method)
    diffusers_hook.find_denoisers(pipe)  # the plain "no denoiser" error before anything else
    disable(pipe)
    if kind == "step":
        return diffusers_hook.enable_step_policy(pipe, resolve_policy(method, pipe, **settings))
    if kind == "block":
        key = {"teacache": "coefficients", "magcache": "ratios"}.get(method if isinstance(method, str) else "")
        if key and key not in settings:
            try:
                settings[key] = _saved_settings(pipe, method)[key]
            except ValueError:
                pass  # no calibration saved: the published values of the model family, or a clear error there
        return block_cache.enable_block_cache(pipe, method, **settings)
    if method == "diffusers-magcache" and settings.get("mag_ratios") is None and not settings.get("calibrate"):
        try:  # the same magnitude ratios as etcdiff's MagCache calibration records
            settings["mag_ratios"] = _saved_settings(pipe, "magcache")["ratios"]
        except ValueError:
            pass  # FLUX's ship with diffusers; otherwise the adapter says what to do
    return external.enable_external(pipe, method, **settings)


def _kind(method: Any) -> str:
    if isinstance(method, StepPolicy):
        return "step"
    if isinstance(method, str):
        return method_info(method).kind
    from .policies.magcache import MagCache
    from .policies.teacache import TeaCache

    if isinstance(method, (TeaCache, MagCache)):
        return "block"
    raise TypeError(f"etcdiff: method must be a name, a StepPolicy, TeaCache or MagCache; got {type(method).__name__}.")


def disable(pipe: Any) -> None:
    """Remove whatever :func:`enable` added; the pipeline is exactly as it was before."""
    from .integration import block_cache, diffusers_hook, external

    diffusers_hook.disable_step_policy(pipe)
    block_cache.disable_block_cache(pipe)
    external.disable_external(pipe)


def last_report(pipe: Any) -> Any:
    """What the enabled method did in the pipeline's last finished generation (a RunReport or its kin:
    computed steps, per-step err and window, model calls; block executions for block-level methods)."""
    from .integration import block_cache, diffusers_hook, external

    if diffusers_hook.is_step_policy_enabled(pipe):
        return diffusers_hook.step_policy_report(pipe)
    if block_cache.is_block_cache_enabled(pipe):
        return block_cache.block_cache_report(pipe)
    if external.is_external_enabled(pipe):
        return external.external_report(pipe)
    raise RuntimeError("etcdiff.last_report: no method is enabled on this pipeline; call etcdiff.enable first.")


def is_enabled(pipe: Any) -> bool:
    from .integration import block_cache, diffusers_hook, external

    return any(f(pipe) for f in (diffusers_hook.is_step_policy_enabled, block_cache.is_block_cache_enabled,
                                 external.is_external_enabled))
