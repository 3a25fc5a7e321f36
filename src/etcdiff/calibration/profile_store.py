"""One store for every method's calibration profile: where they are saved, how one is found, how it is checked.

A profile is found by model, method, step count and scheduler kind. The search path is the user's folder
(``$ETCDIFF_PROFILE_DIR`` or ``~/.cache/etcdiff/profiles``) and then the profiles shipped with etcdiff; the
profile made at the run's step count wins wherever it is on that path. A profile whose scheduler is recorded
only matches a run with the same scheduler class (format-1 method profiles record none and match any).

A file of this model and method that cannot be used (cut JSON, a non-finite number, a newer format, unreadable,
a folder in its place) is never passed over in silence: the one for the run's step count is an error that names
it, any other a warning that names it. Writes are atomic (:mod:`etcdiff._files`).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from .._files import atomic_write_text
from ..policies.method_profile import MethodProfile, read_method_profile
from .profile import Profile, load_profile, normalize_identity, profile_dir, profile_filename, profile_slug, search_dirs

AnyProfile = Union[Profile, MethodProfile]
_OURS = re.compile(r"^.+_\d+steps(_[a-z0-9.-]+){0,2}\.json$")  # named by etcdiff: the name says whose it is
SCHEDULER_TAGS = ("euler", "unipc", "dpm", "ddim")  # the --scheduler a calibration was made with, in its file name


def filename(identity: str, method: str, steps: int, tag: str | None = None) -> str:
    """``<slug>_<N>steps.json`` for ETC, ``<slug>_<N>steps_<method>.json`` for the others; with ``tag`` (the
    ``--scheduler`` it was made with) ``<slug>_<N>steps_<tag>[_<method>].json``, so that calibrations of one
    model for two schedulers at one step count do not overwrite each other."""
    if tag is not None and tag not in SCHEDULER_TAGS:
        raise ValueError(f"unknown scheduler tag {tag!r}; use one of {', '.join(SCHEDULER_TAGS)}.")
    return profile_filename(identity, steps, suffix=(f"_{tag}" if tag else "")
                            + (".json" if method == "etc" else f"_{method}.json"))


def scheduler_of(profile: AnyProfile) -> str | None:
    return profile.scheduler_class if isinstance(profile, Profile) else profile.scheduler


def for_scheduler(profiles: list[AnyProfile], scheduler: str | None) -> list[AnyProfile]:
    """The profiles a run with ``scheduler`` (a class name; ``None``: any) may use: made with it, or recording
    none (format-1 method profiles)."""
    return [p for p in profiles if scheduler is None or scheduler_of(p) in (None, scheduler)]


def load_any(path: str | os.PathLike, method: str) -> AnyProfile:
    """The profile at ``path``, checked (ETC's tolerance search or another method's settings)."""
    return load_profile(path) if method == "etc" else read_method_profile(path, method)


def save_method_profile(profile: MethodProfile, out: str | os.PathLike | None = None) -> Path:
    """Write ``profile`` to ``out``: a ``.json`` file, or a folder (default :func:`profile_dir`) that gets
    :func:`filename`. Atomic: a unique temporary file in the same folder, then ``os.replace``."""
    target = Path(out).expanduser() if out is not None else profile_dir()
    path = target if target.suffix.lower() == ".json" else target / filename(profile.identity, profile.method,
                                                                             profile.steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(profile.to_dict(), indent=2) + "\n")
    profile.path = path
    return path


@dataclass
class Scan:
    """What the search path holds for one model and method: usable profiles in search order (user's folder
    first, newest first within a folder) and the files that look like its profiles but cannot be used."""

    profiles: list[AnyProfile] = field(default_factory=list)
    broken: list[tuple[Path, int | None, str]] = field(default_factory=list)  # (file, steps in its name, why)

    def step_counts(self) -> list[int]:
        return sorted({p.steps for p in self.profiles})


def scan(identity: str, method: str, directory: str | os.PathLike | None = None) -> Scan:
    """Every profile of ``method`` for the model ``identity`` on the search path (see the module docs)."""
    want = normalize_identity(identity)
    tags = "|".join(SCHEDULER_TAGS)
    named = re.compile(rf"^{re.escape(profile_slug(identity))}_(\d+)steps(?:_(?:{tags}))?"
                       rf"{'' if method == 'etc' else '_' + re.escape(method)}\.json$")
    out = Scan()
    for folder in search_dirs(directory):
        found: list[AnyProfile] = []
        try:
            entries = sorted(folder.iterdir()) if folder.is_dir() else []
        except OSError as e:
            warnings.warn(f"etcdiff: profile folder {folder} cannot be read ({e.strerror}); its profiles are not used.",
                          UserWarning, stacklevel=3)
            entries = []
        for f in entries:
            if f.suffix.lower() != ".json":
                continue
            m = named.match(f.name)
            if m is None and (_OURS.match(f.name) or not _claims(f, want, method)):
                continue  # another model's or another method's file, or not a profile at all
            try:
                prof = load_any(f, method)
            except (OSError, ValueError) as e:
                out.broken.append((f, int(m.group(1)) if m else None, " ".join(str(e).split())))
                continue
            if normalize_identity(prof.identity) == want:
                found.append(prof)
        found.sort(key=lambda p: p.created, reverse=True)
        out.profiles += found
    return out


def _claims(path: Path, identity: str, method: str) -> bool:
    """Whether a file with another name says it is this model's profile of ``method`` (``--out FILE.json``)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    kind = doc.get("method", "etc" if "tau" in doc else None)
    return kind == method and normalize_identity(str(doc.get("identity", ""))) == identity


def report_broken(found: Scan, method: str, steps: int | None) -> None:
    """An error for a broken file made for the run's step count, a warning naming each other one."""
    for path, at, why in found.broken:
        if steps is not None and at == steps:
            raise ValueError(f"{why} (the {method} profile for {steps} steps; it is not replaced by another one: "
                             f"fix or remove it, or run `etcdiff calibrate --method {method} --steps {steps}`)")
    for path, at, why in found.broken:
        warnings.warn(f"etcdiff: skipping a broken {method} profile: {why}", UserWarning, stacklevel=3)


def find_for_run(identity: str, method: str, steps: int | None, scheduler: str | None = None,
                 directory: str | os.PathLike | None = None, scanned: Scan | None = None) -> AnyProfile | None:
    """The profile of ``method`` for a run of ``steps`` steps with ``scheduler`` (a class name), or ``None``
    when there is none for that step count (see :func:`missing_message`). ``steps=None``: the first usable
    profile on the search path."""
    found = scanned if scanned is not None else scan(identity, method, directory)
    report_broken(found, method, steps)
    fits = for_scheduler(found.profiles, scheduler)
    if steps is None:
        return fits[0] if fits else None
    return next((p for p in fits if p.steps == steps), None)


#: the ``--scheduler`` name of the calibration command for a scheduler class (``etcdiff.models.use_scheduler``)
SCHEDULER_FLAGS = {"FlowMatchEulerDiscreteScheduler": "euler", "EulerDiscreteScheduler": "euler",
                   "UniPCMultistepScheduler": "unipc", "DPMSolverMultistepScheduler": "dpm", "DDIMScheduler": "ddim"}


def calibrate_command(method: str, steps: int | None = None, scheduler: str | None = None) -> str:
    """The command that makes a profile of ``method`` (at ``steps``, with ``scheduler`` where it has a flag)."""
    flag = SCHEDULER_FLAGS.get(scheduler or "")
    return (f"`etcdiff calibrate --model <id or path> --method {method}"
            + (f" --scheduler {flag}" if flag else "") + (f" --steps {steps}" if steps is not None else "") + "`")


def missing_message(identity: str, method: str, steps: int, scheduler: str | None, found: Scan) -> str:
    """Why no profile of ``method`` fits a run of ``steps`` steps, what exists, and the command to make one."""
    command = calibrate_command(method, steps, scheduler)
    same_steps = [p for p in found.profiles if p.steps == steps]
    if same_steps and scheduler is not None:
        kinds = sorted({str(scheduler_of(p)) for p in same_steps})
        return (f"{method}: the {steps}-step calibration of {identity!r} was made with {', '.join(kinds)}, and this "
                f"pipeline runs {scheduler}; calibrate with this scheduler: {command}.")
    other = scheduler_mismatch(identity, method, scheduler, found, steps)
    if other:
        return other
    counts = ", ".join(str(n) for n in sorted({p.steps for p in for_scheduler(found.profiles, scheduler)}))
    return (f"{method}: {identity!r} is calibrated at {counts} steps, not at {steps}; use one of those step counts "
            f"or calibrate at {steps}: {command}.")


def scheduler_mismatch(identity: str, method: str, scheduler: str | None, found: Scan | None = None,
                       steps: int | None = None) -> str | None:
    """Why no profile of ``method`` serves a pipeline running ``scheduler`` although others exist (they were all
    made with other schedulers), with the command for this one; ``None`` when some profile may serve it."""
    if scheduler is None:
        return None
    found = found if found is not None else scan(identity, method)
    if not found.profiles or for_scheduler(found.profiles, scheduler):
        return None
    kinds = sorted({str(scheduler_of(p)) for p in found.profiles})
    return (f"{method}: {identity!r} is calibrated with {', '.join(kinds)} only, and this pipeline runs {scheduler}; "
            f"calibrate with this scheduler: {calibrate_command(method, steps, scheduler)}.")


def find_profile(identity: str, steps: int | None = None, directory: str | os.PathLike | None = None,
                 scheduler: str | None = None) -> Profile | None:
    """ETC's saved profile of the model ``identity`` (see :func:`~etcdiff.calibration.profile.profile_identity`),
    or ``None``.

    With ``steps``: the profile searched at that step count wherever it is on the search path; else the one
    with the nearest step count in the first folder that has any (use it through
    :func:`~etcdiff.calibration.profile.etc_from_profile` with ``steps``, which carries tau over and warns).
    Without: the first on the search path, newest first. A broken file of this model is named, never skipped
    in silence (:func:`report_broken`).
    """
    found = scan(identity, "etc", directory)
    exact = find_for_run(identity, "etc", steps, scheduler, scanned=found)
    if exact is not None or steps is None:
        return exact
    fits = for_scheduler(found.profiles, scheduler) or found.profiles
    if not fits:
        return None
    first = [p for p in fits if p.path is not None and p.path.parent == fits[0].path.parent] or fits
    return min(first, key=lambda p: (abs(p.steps - steps), -p.steps))


class TauForSteps:
    """ETC's ``threshold_for_steps`` from the store: the tau searched at the run's step count wherever it is on
    the search path, else the tau of the nearest profile carried over (with its warning, see
    :func:`~etcdiff.calibration.profile.etc_from_profile`)."""

    def __init__(self, identity: str, scheduler: str | None = None) -> None:
        self.identity, self.scheduler = identity, scheduler

    def __call__(self, steps: int) -> float:
        from .profile import etc_from_profile

        prof = find_profile(self.identity, steps, scheduler=self.scheduler)
        if prof is None:
            raise ValueError(f"etc: no calibration profile of {self.identity!r} is left on the search path; "
                             f"run `etcdiff calibrate --model <id or path> --steps {steps}` or give a threshold.")
        return etc_from_profile(prof, steps).threshold
