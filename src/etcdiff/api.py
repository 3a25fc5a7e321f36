"""One way to select any method: ``etcdiff.enable(pipe, "name", **settings)``; every name is read from the
registry (:mod:`etcdiff.registry`, declarations in :mod:`etcdiff.catalog`)."""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any, Iterator

from . import catalog  # noqa: F401  (registers the shipped methods)
from .kinds import KINDS, enabled_kind
from .policies.step.base import StepPolicy
from .registry import METHODS, Method, ceiling_note, get_method, no_reuse_note

#: the last report of a pipeline whose method was disabled, so ``last_report`` still answers after
#: ``with etcdiff.enabled(...)`` exits
_LAST_REPORTS: "weakref.WeakKeyDictionary[Any, tuple[str, dict[str, Any], Any]]" = weakref.WeakKeyDictionary()
#: the method name and settings of each enabled pipeline, for :func:`summary`
_ENABLED: "weakref.WeakKeyDictionary[Any, tuple[str, dict[str, Any]]]" = weakref.WeakKeyDictionary()


def resolve(method: Method, pipe: Any, settings: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The object to enable for ``method`` on ``pipe`` and the settings used, saved calibrations filled in (a
    step policy or block rule then follows each run's step count: :mod:`etcdiff.saved_calibration`)."""
    from .saved_calibration import StepsSource, check_explicit_profiles, filled, pipeline_scheduler, saved_for_enable

    settings = method.check_settings(settings)
    explicit = check_explicit_profiles(pipe, method, settings)
    if explicit is not None:  # a saved profile given by path supplies what else it saved
        settings = filled(method, explicit, settings)
    missing = [s for s in method.saved if s not in settings]
    chosen = None
    if missing and not any(s in settings for s in method.saved_unless):
        chosen = saved_for_enable(pipe, method)
        if chosen is not None:
            given, settings = settings, filled(method, chosen, settings)
        elif method.saved_required:
            from .calibration.profile import profile_identity
            from .calibration.profile_store import scheduler_mismatch

            ident = profile_identity(pipe) if pipe is not None else "this model"
            other = scheduler_mismatch(ident, method.saved_from or method.name, pipeline_scheduler(pipe))
            if other:
                raise ValueError(other)
            raise ValueError(
                f"{method.name} needs an offline calibration of {ident!r} and none is saved; run "
                f"`etcdiff calibrate --model <id or path> --method {method.name}` once, or give its settings.")
    if method.resolve is not None:
        return method.resolve(pipe, settings), settings
    if method.kind == "external":
        method.schema()  # the peer's import errors, before anything is touched
        return None, settings
    built = method.build(settings)
    if chosen is not None and method.kind in ("step", "block"):
        built.for_steps = StepsSource(method.name, chosen.identity, pipeline_scheduler(pipe), given, built, chosen)
    return built, settings


def resolve_policy(policy: StepPolicy | str, pipe: Any = None, **settings: Any) -> StepPolicy:
    """``policy`` as a step policy object: a name with its settings (saved calibrations and presets filled in)
    or a policy object, unchanged."""
    if isinstance(policy, StepPolicy):
        if settings:
            raise ValueError(f"settings {sorted(settings)} go with a method name, not with a policy object.")
        return policy
    method = get_method(policy)
    if method.kind != "step":
        raise ValueError(f"{policy!r} is a {method.kind}-level method, not a step policy; the step policies are: "
                         f"{', '.join(n for n, m in METHODS.items() if m.kind == 'step')}.")
    return resolve(method, pipe, settings)[0]


def make_policy(method: str, **settings: Any) -> StepPolicy:
    """A step policy by name, e.g. ``make_policy("etc", threshold=0.1)`` (no pipeline: nothing saved is read)."""
    return resolve_policy(method, None, **settings)


def _method_of(thing: Any) -> tuple[Method | None, str]:
    """The registered method of a name or object, and its kind (an unregistered StepPolicy is ``step``)."""
    if isinstance(thing, str):
        m = get_method(thing)
        return m, m.kind
    for m in METHODS.values():
        if m.kind != "external":
            try:
                if isinstance(thing, m.schema()):
                    return m, m.kind
            except ImportError:  # pragma: no cover
                continue
    if isinstance(thing, StepPolicy):
        return None, "step"
    raise TypeError(f"method must be a name ({', '.join(METHODS)}), a StepPolicy or a block rule; "
                    f"got {type(thing).__name__}.")


def enable(pipe: Any, method: Any = "etc", **settings: Any) -> Any:
    """Put any method on an unmodified diffusers pipeline; returns the policy, rule or peer config.

    ``method`` is a registered name with its settings (``enable(pipe, "teacache", threshold=0.4)``) or a
    policy/rule object (``enable(pipe, etcdiff.ETC(0.1))``). Whatever was enabled before is removed first.
    """
    from .integration.denoiser_owners import CannotRun
    from .integration.denoisers import find_denoisers

    info, kind = _method_of(method)
    find_denoisers(pipe)  # the plain "no denoiser" error before anything else
    try:
        KINDS[kind].check(pipe)  # "not on this model" before "calibrate it first"
        if isinstance(method, str):
            thing, used = resolve(info, pipe, settings)
        else:
            if settings:
                raise ValueError(f"settings {sorted(settings)} go with a method name, not with a policy or rule object.")
            thing, used = method, dict(getattr(method, "params", dict)())
        disable(pipe)
        out = KINDS[kind].enable(pipe, info, thing, used)
    except CannotRun as e:
        raise CannotRun(f"{e} {methods_that_run(pipe)}") from None
    name = info.name if info is not None else getattr(method, "name", type(method).__name__)
    params = getattr(thing, "params", None)
    _ENABLED[pipe] = (name, {**(params() if callable(params) else {}), **used})
    return out


def methods_that_run(pipe: Any) -> str:
    """'Methods that run on it: ...', every registered method whose kind can run on ``pipe``'s model."""
    names = [n for k in KINDS.values()
             for n in k.runs_on(pipe, [m.name for m in METHODS.values() if m.kind == k.name])]
    return f"Methods that run on it: {', '.join(names)}."


def disable(pipe: Any) -> None:
    """Remove whatever :func:`enable` added; the pipeline is exactly as it was before. The last report stays
    readable through :func:`last_report`."""
    kind = enabled_kind(pipe)
    if kind is not None:
        try:
            name, used = _ENABLED.get(pipe, (kind, {}))
            _LAST_REPORTS[pipe] = (name, used, KINDS[kind].report(pipe))
        except (RuntimeError, TypeError):
            pass  # no generation ran: nothing to keep
        KINDS[kind].disable(pipe)
    _ENABLED.pop(pipe, None)


def last_report(pipe: Any) -> Any:
    """What the method did in the pipeline's last finished generation (a RunReport or its kin: computed steps,
    per-step signal and window, model calls; block executions for block-level methods). Still available after
    :func:`disable` (or the end of ``with etcdiff.enabled(...)``)."""
    kind = enabled_kind(pipe)
    if kind is not None:
        return KINDS[kind].report(pipe)
    if pipe in _LAST_REPORTS:
        return _LAST_REPORTS[pipe][2]
    raise RuntimeError("etcdiff.last_report: no method is enabled on this pipeline and none ran on it; "
                       "call etcdiff.enable first.")


def is_enabled(pipe: Any) -> bool:
    return enabled_kind(pipe) is not None


def summary(pipe: Any) -> dict[str, Any]:
    """Method, settings, model calls and speedup of the pipeline's last generation, as a dict (also printed by
    ``etcdiff generate``)."""
    kind = enabled_kind(pipe)
    if kind is not None:
        name, used = _ENABLED.get(pipe, ("?", {}))
        report = KINDS[kind].report(pipe)
    elif pipe in _LAST_REPORTS:
        name, used, report = _LAST_REPORTS[pipe]
    else:
        raise RuntimeError("etcdiff.summary: no method is enabled on this pipeline and none ran on it.")
    steps = getattr(report, "num_steps", None)
    computed = getattr(report, "num_computed", None)
    out = {
        "method": name,
        "settings": {k: v for k, v in used.items() if isinstance(v, (int, float, str, bool)) or v is None},
        "steps": steps,
        "computed_steps": computed,
        "model_calls": getattr(report, "model_calls", None),
        "speedup": (steps / computed) if steps and computed else None,
    }
    note = no_reuse_note(name, out["settings"], steps, computed) or ceiling_note(name, out["settings"], computed)
    if note is not None:
        out["note"] = note  # the method skipped nothing, or fewer steps ran than asked: say so
    return out


@contextmanager
def enabled(pipe: Any, method: Any = "etc", **settings: Any) -> Iterator[Any]:
    """``with etcdiff.enabled(pipe, "etc", threshold=0.1): pipe(...)``: enable, then disable on exit, even on error."""
    out = enable(pipe, method, **settings)
    try:
        yield out
    finally:
        disable(pipe)
