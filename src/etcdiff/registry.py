"""The one registry of methods: each method is declared once, as a :class:`Method`, and every entry point
(``etcdiff.enable``, ``last_report``, the CLI's ``--method`` / ``--set`` / ``--settings``, ``calibrate --method``,
the bench) reads it.

A method knows its name and kind, its settings (the parameters of its policy or config class, checked with
one-line errors and a "did you mean"), where a saved calibration supplies settings, how it is calibrated, and
which :class:`Kind` puts it on a pipeline, takes it off and reports. Adding a method is one module (the
policy) and one :func:`register` call (see ``catalog.py``).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from ._numbers import as_int, as_real

KIND_NAMES = ("step", "block", "external")


@dataclass(frozen=True)
class Method:
    """One method under etcdiff's interface.

    Args:
        name: what ``enable(pipe, name)`` and ``--method`` take.
        kind: ``"step"`` (a :class:`~etcdiff.policies.step.base.StepPolicy` predicts the whole output on skipped
            steps), ``"block"`` (a rule reuses the transformer blocks' residual) or ``"external"`` (a real peer
            as it ships).
        source, reuses, calibration: one line each, for the README table and ``etcdiff methods``.
        schema: returns the class whose constructor (or dataclass fields) are the method's settings; for step
            and block methods the class is also what gets built.
        saved: settings that a saved calibration supplies when the user gives none: setting -> key in the saved
            settings of ``saved_from`` (default: this method).
        saved_required: fail with "run etcdiff calibrate" when the saved calibration is missing.
        saved_unless: settings that make the saved calibration unnecessary when given (MeanCache's schedule).
        threshold: the setting that the CLI's ``--threshold`` sets (``None``: the method has no tolerance).
        fit: ``fit(records, decode=..., **settings) -> dict`` of settings, from full-step runs recorded on
            calibration inputs (``etcdiff calibrate --method``, ``etcdiff.calibrate_policy``).
        calibrate_pipeline: a pipeline-only calibration ``(pipe, prompts, steps, seed, guidance_scale,
            **settings) -> dict`` for methods whose signals live inside the model (block caches).
        resolve: custom settings resolution ``(pipe, settings) -> object`` (ETC: profile, then preset).
        fit_settings: settings that only the calibration takes (ERTACache's schedule ``threshold``).
        fit_reads: run-time settings the fit also reads (ETC's ``warmup``; MeanCache's budget ``calls``).
        recorders: returns ``(record_denoiser, record_pipeline)`` for a method whose calibration records
            something else than full-step trajectories (SenCache's sensitivities, with extra forwards).
        extra_runs: ``(prompts, steps, **settings) -> int``, the generations a pipeline calibration makes beyond
            one per prompt with the user's settings (etc-plus's probe and held-out runs), for the progress bar.
        choose: ``(fit setting, candidate values)``: when the user does not give that setting, calibration fits
            each value and keeps the one whose policies, run at several budgets (the method's ``calls``) on
            held-out calibration runs, come closest to the full runs (:mod:`etcdiff.calibration.selection`);
            a tuple of settings with tuples of values chooses them jointly (settings the user gives are fixed).
        plan_variant: run-time settings the method picks per budget from what calibration measured (etc-plus's
            ``last_step``): ``choose`` also runs each candidate with them and judges it by the better of the two.
        per_budget: ``choose`` may also keep, per budget, a candidate that beats the overall choice there alone
            (etc-plus: the profile's ``budget_fits``; :func:`~etcdiff.calibration.selection.budget_choice`).
        refine: returns ``refine(fitted, held_out)``, a method's own checks on the same held-out runs after the
            choice (etc-plus: measured budget errors and the tolerance scale, :mod:`etcdiff.calibration.etc_plus.refine`).
        replays: the method's fit has probe runs (etc-plus), and its calibration can take ``replays=True``: then
            the held-out runs of ``choose`` and ``refine`` are replays of the recorded runs, with the model's
            feedback fitted on a few real runs, and one recorded run is probed for real
            (:mod:`etcdiff.calibration.etc_plus.replay`; real runs where the recorded runs cannot be replayed).
            Without it, the probes and held-out runs are real.
        replay_default: the candidate of ``choose`` that a replayed choice keeps, where the replays miss real runs
            by more than they are trusted with, unless another beats it by more than that miss (etc-plus: no
            probes, gains only where they held out of sample); elsewhere the first candidate is the default.
        replay_offsets: a setting of ``choose`` whose candidates, with ``replay_offsets=True`` (opt-in, on top of
            ``replays``), the replays' pull is fitted on together (its real runs spread over them), each
            candidate's replays then shifted by how far they missed its real runs (etc-plus: ``corrections``;
            :func:`~etcdiff.calibration.etc_plus.replay.candidate_offsets`).
    """

    name: str
    kind: str
    source: str
    reuses: str
    calibration: str
    schema: Callable[[], type]
    saved: dict[str, str] = field(default_factory=dict)
    saved_from: str | None = None
    saved_required: bool = False
    saved_unless: tuple[str, ...] = ()
    threshold: str | None = "threshold"
    fit: Callable[..., dict[str, Any]] | None = None
    calibrate_pipeline: Callable[..., dict[str, Any]] | None = None
    resolve: Callable[[Any, dict[str, Any]], Any] | None = None
    fit_settings: tuple[str, ...] = ()
    fit_reads: tuple[str, ...] = ()
    recorders: Callable[[], tuple[Callable[..., Any], Callable[..., Any]]] | None = None
    extra_runs: Callable[..., int] | None = None
    choose: tuple[str | tuple[str, ...], tuple[Any, ...]] | None = None
    refine: Callable[[], Callable[..., None]] | None = None
    plan_variant: dict[str, Any] | None = None
    per_budget: bool = False
    replays: bool = False
    replay_default: Any = None
    replay_offsets: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KIND_NAMES:
            raise ValueError(f"method {self.name!r}: kind must be one of {', '.join(KIND_NAMES)}, got {self.kind!r}.")

    @property
    def calibrated(self) -> bool:
        return self.fit is not None or self.calibrate_pipeline is not None

    def settings_names(self) -> list[str]:
        """The names the method's settings class takes."""
        return setting_names(self.schema())

    def check_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """``settings`` with plain Python numbers, or a ValueError naming an unknown setting and the real ones."""
        known = self.settings_names()
        for key in settings:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown setting {key!r} for method {self.name!r}.{hint} "
                                 f"Its settings: {', '.join(known) or 'none'}.")
        return {k: plain_number(v) for k, v in settings.items()}

    def build(self, settings: dict[str, Any]) -> Any:
        """The policy or rule object of this method with ``settings`` (step and block methods)."""
        cls = self.schema()
        try:
            return cls(**settings)
        except TypeError as e:
            missing = [n for n, p in _parameters(cls).items()
                       if p.default is inspect.Parameter.empty and n not in settings]
            if missing:
                raise ValueError(f"method {self.name!r} needs the setting(s) {', '.join(missing)}.") from None
            raise ValueError(f"bad settings for method {self.name!r}: {e}") from None


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls).parameters
    return {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def setting_names(cls: type) -> list[str]:
    """The settings a class takes: its dataclass fields that ``__init__`` accepts, else its parameters."""
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init]
    return list(_parameters(cls))


def plain_number(value: Any) -> Any:
    """numpy scalars and 0-d tensors or arrays as Python numbers: every real number type is a valid setting."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    for convert in (as_int, as_real):
        number = convert(value)
        if number is not None:
            return number
    return value


METHODS: dict[str, Method] = {}


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to the registry (``replace=True`` to redefine a name); returns it."""
    if not isinstance(method, Method):
        raise TypeError(f"register takes a Method, got {type(method).__name__}.")
    if method.name in METHODS and not replace:
        raise ValueError(f"a method named {method.name!r} is registered already; pass replace=True to redefine it.")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method added with :func:`register` (for tests and plug-ins)."""
    METHODS.pop(name, None)


def get_method(name: str) -> Method:
    """The registered method ``name``, or a ValueError that names the closest and all the choices."""
    if not isinstance(name, str):
        raise TypeError(f"a method name must be a string, got {type(name).__name__}.")
    try:
        return METHODS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown method {name!r}.{hint} Choose one of: {', '.join(METHODS)}.") from None


def methods_of_kind(*kinds: str) -> list[str]:
    return [n for n, m in METHODS.items() if m.kind in kinds]


def ceiling_note(name: str, settings: dict[str, Any], computed: int | None) -> str | None:
    """One line when a step method given ``calls`` (a ceiling) ran fewer real steps: the user should not read the
    asked budget as the one that ran."""
    calls = settings.get("calls")
    method = METHODS.get(name)
    if method is None or method.kind != "step" or isinstance(calls, bool) or not isinstance(calls, int) \
            or computed is None or computed >= calls:
        return None
    why = " (etc-plus: calibration measured no larger plan clearly closer to the full run)" if name == "etc-plus" else ""
    return f"{name} ran {computed} of the {calls} calls allowed: calls is a ceiling, and the plan it ran has fewer{why}."


def no_reuse_note(name: str, settings: dict[str, Any], steps: int | None, computed: int | None) -> str | None:
    """One line when ``computed == steps`` for a step method that can skip, naming the setting to raise."""
    method = METHODS.get(name)
    if method is None or method.kind != "step" or name == "none" or not steps or computed is None or computed < steps:
        return None
    knob = method.threshold
    if knob is None:
        hint = f"see its settings ({', '.join(method.settings_names()) or 'none'})"
    else:
        now = settings.get(knob)
        hint = f"raise {knob}" + (f" (now {now})" if now is not None else "")
    return f"{name} reused nothing: all {steps} steps ran the model, so it only adds overhead; to skip steps, {hint}."
