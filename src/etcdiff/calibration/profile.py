"""Calibration profiles: the result of a tolerance search as a JSON file, and ETC built from one.

Where profiles live: ``$ETCDIFF_PROFILE_DIR`` if set, else ``~/.cache/etcdiff/profiles/`` (``etcdiff calibrate
--out DIR`` writes elsewhere). The file name is ``<slug>_<N>steps.json`` (the plot: ``.png``) where the slug
comes from the model identity: a hub id ``org/name`` gives ``org--name`` (lower case); a local path gives its
folder name and a short hash of the absolute path; the embedded demo is ``demo``.

A profile searched at N steps and used at M != N steps: the step-difference and similarity curves are
resampled by relative position (``np.interp`` at i / (M - 2) over the searched points at i / (N - 2)), the
change point is searched again on the resampled similarity curve and tau is read off the resampled
difference curve. That is an estimate, so it warns; it never reuses the N-step tau as it is.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import warnings
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write_text
from ..policies.step.etc import ETC
from .change_point import DEFAULT_JUMP, DEFAULT_MIN_SIZE

PROFILE_FORMAT = 1
ENV_DIR = "ETCDIFF_PROFILE_DIR"


#: Profiles that ship with etcdiff (the embedded demo model's), searched after the user's folder.
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "profiles"


def profile_dir() -> Path:
    """``$ETCDIFF_PROFILE_DIR``, else ``~/.cache/etcdiff/profiles``."""
    env = os.environ.get(ENV_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "etcdiff" / "profiles"


def search_dirs(directory: str | os.PathLike | None = None) -> list[Path]:
    """Where profiles are looked for: ``directory`` alone if given, else :func:`profile_dir` then the shipped ones."""
    if directory is not None:
        return [Path(directory).expanduser()]
    return [profile_dir(), SHIPPED_DIR]


def _looks_like_path(identity: str) -> bool:
    return identity.startswith(("/", ".", "~")) or os.path.isabs(identity) or os.path.exists(identity)


def normalize_identity(identity: str) -> str:
    """A local path as an absolute path (so a profile is found from any working directory); ids unchanged."""
    ident = str(identity).strip()
    if _looks_like_path(ident):
        return str(Path(ident).expanduser().resolve())
    return ident.rstrip("/")


def profile_slug(identity: str) -> str:
    """A file-name-safe name for a model identity (see the module docs)."""
    ident = normalize_identity(identity)
    if _looks_like_path(ident):
        raw = f"{Path(ident).name}-{hashlib.sha1(ident.encode()).hexdigest()[:8]}"
    else:
        raw = ident.replace("/", "--")
    return re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-.") or "model"


def profile_filename(identity: str, steps: int, suffix: str = ".json") -> str:
    return f"{profile_slug(identity)}_{steps}steps{suffix}"


def model_identity(pipe: Any) -> str | None:
    """The hub id or local path a pipeline was loaded from, where diffusers recorded it."""
    config = getattr(pipe, "config", None)
    name = getattr(config, "_name_or_path", None) if config is not None else None
    return name or getattr(pipe, "name_or_path", None)


def profile_identity(pipe: Any) -> str:
    """The identity a profile of ``pipe`` is saved and found under: the hub id or local path the pipeline was
    loaded from (:func:`model_identity`); else the ``etcdiff_identity`` a pipeline class declares (the embedded
    models do); else the class name."""
    ident = model_identity(pipe)
    if ident:
        return normalize_identity(ident)
    return getattr(pipe, "etcdiff_identity", None) or type(pipe).__name__


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    from .._package import __version__

    out = {"etcdiff": __version__}
    for dist in ("torch", "diffusers", "ruptures", "scikit-image", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def jsonable(obj: Any) -> Any:
    """``obj`` made of JSON types only (tuples to lists, numpy scalars to numbers, anything else to str)."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):  # a tensor argument (e.g. prompt_embeds): describe it
        return f"<{type(obj).__name__} shape={list(obj.shape)} dtype={obj.dtype}>"
    return str(obj)


@dataclass
class Profile:
    """One tolerance search: what was searched (model, steps, scheduler, prompts, seed), the curves, the
    change point and the ETC parameters to use. ``change_point`` is r, an index into ``d_bar``/``s_bar``
    (d_bar[i] = mean|eps_{i+1} - eps_i|), and ``tau == d_bar[r]``."""

    identity: str
    model_class: str
    steps: int
    scheduler_class: str
    scheduler_config: dict[str, Any]
    tau: float
    warmup: int
    alpha: float
    d_bar: list[float]
    s_bar: list[float]
    change_point: int
    prompts: list[str]
    seed: int
    modality: str = "image"
    decoder: str = ""
    detector: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    seconds: float = 0.0
    format: int = PROFILE_FORMAT
    path: Path | None = field(default=None, compare=False, repr=False)

    # -- construction and checks -----------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.d_bar = [float(x) for x in self.d_bar]
        self.s_bar = [float(x) for x in self.s_bar]
        self.validate()

    def validate(self) -> None:
        where = f"profile {self.path}" if self.path else "profile"
        if not isinstance(self.steps, int) or self.steps < 3:
            raise ValueError(f"{where}: steps must be an integer >= 3, got {self.steps!r}.")
        if len(self.d_bar) != self.steps - 1 or len(self.s_bar) != self.steps - 1:
            raise ValueError(
                f"{where}: d_bar and s_bar must have steps - 1 = {self.steps - 1} values, "
                f"got {len(self.d_bar)} and {len(self.s_bar)}."
            )
        if not 0 <= self.change_point < self.steps - 1:
            raise ValueError(f"{where}: change_point {self.change_point} is outside 0..{self.steps - 2}.")
        if not math.isfinite(self.tau) or self.tau < 0:
            raise ValueError(f"{where}: tau must be a finite number >= 0, got {self.tau!r}.")
        if not all(math.isfinite(x) for x in self.d_bar + self.s_bar):
            raise ValueError(f"{where}: d_bar and s_bar must hold finite numbers; the search is broken: calibrate again.")
        if not isinstance(self.warmup, int) or self.warmup < 2 or not (math.isfinite(self.alpha) and 0 < self.alpha <= 1):
            raise ValueError(f"{where}: warmup must be an integer >= 2 and alpha in (0, 1], got {self.warmup!r} and "
                             f"{self.alpha!r}.")

    @property
    def jump(self) -> int:
        return int(self.detector.get("jump", DEFAULT_JUMP))

    @property
    def min_size(self) -> int:
        return int(self.detector.get("min_size", DEFAULT_MIN_SIZE))

    @property
    def filename(self) -> str:
        return profile_filename(self.identity, self.steps)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({f.name: getattr(self, f.name) for f in fields(self) if f.name != "path"})

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> "Profile":
        where = f"profile {path}" if path else "profile"
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}.")
        fmt = data.get("format", PROFILE_FORMAT)
        if fmt != PROFILE_FORMAT:
            raise ValueError(f"{where}: profile format {fmt!r} is not supported by this etcdiff (format {PROFILE_FORMAT}).")
        names = [f.name for f in fields(cls) if f.name != "path"]
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [n for n in required if n not in data]
        if missing:
            raise ValueError(f"{where}: missing fields {missing}; is this an etcdiff calibration profile?")
        kwargs = {n: data[n] for n in names if n in data}
        try:
            for n in ("steps", "change_point", "warmup", "seed"):
                kwargs[n] = int(kwargs[n])
            for n in ("tau", "alpha"):
                kwargs[n] = float(kwargs[n])
            return cls(**kwargs, path=path)
        except (TypeError, ValueError) as e:
            msg = str(e)
            raise ValueError(msg if msg.startswith(where) else f"{where}: {msg}") from None

    # -- use ------------------------------------------------------------------------------------------------------
    def etc(self, steps: int | None = None) -> ETC:
        """:func:`etc_from_profile` of this profile."""
        return etc_from_profile(self, steps)

    def save(self, out: str | os.PathLike | None = None) -> Path:
        """:func:`save_profile` of this profile."""
        return save_profile(self, out)

    def summary(self) -> str:
        return (
            f"tau = {self.tau:.6g} at change point r = {self.change_point} (d between steps {self.change_point} and "
            f"{self.change_point + 1} of {self.steps}; s_bar {self.s_bar[0]:.3f} -> {self.s_bar[-1]:.3f}), "
            f"warmup {self.warmup}, alpha {self.alpha}"
        )


def save_profile(profile: Profile, out: str | os.PathLike | None = None) -> Path:
    """Write ``profile`` as JSON and return the path. ``out``: a ``.json`` file, or a directory (default
    :func:`profile_dir`) that gets :attr:`Profile.filename`."""
    target = Path(out).expanduser() if out is not None else profile_dir()
    if target.suffix.lower() != ".json":
        target = target / profile.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(profile.to_dict(), indent=2) + "\n")  # a unique temp file, then os.replace
    profile.path = target
    return target


def load_profile(path: str | os.PathLike) -> Profile:
    """Read a profile written by :func:`save_profile` (``FileNotFoundError``/``ValueError`` with the reason)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"profile {p} is a folder, not a file; remove it or give the profile's file.")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"calibration profile not found: {p}") from None
    except OSError as e:
        raise ValueError(f"profile {p} cannot be read ({e.strerror}); fix its permissions or remove it.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"profile {p} is not valid JSON ({e}); it may have been cut short: remove it and "
                         "calibrate again.") from None
    return Profile.from_dict(data, path=p)


def resample_curves(profile: Profile, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``d_bar``/``s_bar`` of a profile resampled to a run of ``steps`` steps by relative position."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 3:
        raise ValueError(f"steps must be an integer >= 3, got {steps!r}.")
    n = profile.steps
    src = np.arange(n - 1) / (n - 2)
    dst = np.arange(steps - 1) / (steps - 2)
    return np.interp(dst, src, profile.d_bar), np.interp(dst, src, profile.s_bar)


def etc_from_profile(profile_or_path: Profile | str | os.PathLike, steps: int | None = None) -> ETC:
    """``ETC(tau, warmup, alpha)`` from a profile (or its path).

    Without ``steps`` the policy follows each run's step count: the searched tau at the profile's own count,
    and at another one the tau re-derived below.

    ``steps`` other than the profile's: the tolerance at the same relative position of the change point on the
    profile's output-change curve, which is the searched tau itself, with a warning. It used to come from a new
    change-point search on the curves resampled to ``steps``; that search moves by whole grid cells, so tau
    jumped about between neighbouring step counts (digits, 25/28/30 steps: 0.037/0.072/0.041). Searched at
    those counts the digits model gives 0.046 (25), 0.053 (30) and 0.065 (50): calibrating at the step count
    you use is the accurate way, and the carried-over value varies smoothly (it is constant) in between.
    """
    prof = profile_or_path if isinstance(profile_or_path, Profile) else load_profile(profile_or_path)
    if steps is None:  # follow each run's step count: the searched tau at the profile's own, carried over elsewhere
        return ETC(threshold=prof.tau, warmup=prof.warmup, alpha=prof.alpha,
                   threshold_for_steps=lambda n: etc_from_profile(prof, n).threshold)
    if steps == prof.steps:
        return ETC(threshold=prof.tau, warmup=prof.warmup, alpha=prof.alpha)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 3:
        raise ValueError(f"cannot use the {prof.steps}-step profile of {prof.identity} for {steps!r} steps; "
                         "give a step count >= 3.")
    d, _ = resample_curves(prof, steps)
    position = prof.change_point / max(prof.steps - 2, 1)  # where the change point sits along the run
    tau = float(np.interp(position * (steps - 2), np.arange(steps - 1), d))
    warnings.warn(
        f"etcdiff: the ETC profile of {prof.identity} was searched at {prof.steps} steps; for {steps} steps tau = "
        f"{tau:.6g} is carried over from the same point of the run. For a searched value run "
        f"`etcdiff calibrate --steps {steps}`.",
        UserWarning,
        stacklevel=2,
    )
    return ETC(threshold=tau, warmup=prof.warmup, alpha=prof.alpha)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
