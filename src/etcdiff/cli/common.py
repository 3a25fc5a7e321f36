"""What the subcommands share: user errors, output paths checked before any work, devices, method settings
in CLI terms, and wall-clock figures with their spread."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any, Sequence


class CLIError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


#: ``etcdiff.models.SCHEDULERS`` (= ``profile_store.SCHEDULER_TAGS``), named here so that ``--help`` imports no
#: torch (a test keeps them equal)
SCHEDULER_CHOICES = ("euler", "unipc", "dpm", "ddim")


def add_scheduler_argument(parser: argparse.ArgumentParser) -> None:
    """``--scheduler``: run with one of :data:`SCHEDULER_CHOICES` instead of the pipeline's own."""
    parser.add_argument("--scheduler", choices=SCHEDULER_CHOICES, default=None,
                        help="sample with this scheduler instead of the pipeline's own, built from its config: euler, "
                             "unipc, dpm (DPM-Solver++ 2M) or ddim (epsilon models); flow models get flow sigmas "
                             "(default: the pipeline's own)")


def thread_count(text: str) -> int:
    """``--threads``: a whole number >= 1 (argparse's one-line usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def add_threads_argument(parser: argparse.ArgumentParser, default: str = "torch's own, every core") -> None:
    """``--threads``: torch's CPU threads (intra-op) per process; ``default`` says what runs without it."""
    parser.add_argument("--threads", type=thread_count, default=None, metavar="N",
                        help=f"torch CPU threads per process (default: {default}); 1 runs two jobs side by side "
                             "on a small machine without contending for its cores")


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a JSON value where it parses (numbers, true/false/null), else the string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def guidance_value(text: str) -> float:
    """``--guidance``: a finite number >= 0 (argparse's one-line usage error otherwise)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (1 = no guidance), got {text!r}")
    return value


def _blocking_file(path: Path) -> Path | None:
    """The first existing non-folder among ``path``'s parents, if any."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def prepare_output_dir(path: Path, flag: str = "--out") -> Path:
    """Create the output folder now, before any sampling, or fail with one line saying why."""
    blocker = path if path.exists() and not path.is_dir() else _blocking_file(path)
    if blocker is not None:
        raise CLIError(f"{flag} {path}: {blocker} is a file, not a folder; choose another {flag}.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"{flag} {path}: cannot create the folder ({e.strerror}); choose another {flag}.") from None
    return path


def prepare_output_file(path: Path, flag: str = "--out") -> Path:
    """Check that ``path`` can be written (its folder is created now, before any sampling)."""
    if path.is_dir():
        raise CLIError(f"{flag} {path} is a folder; give a file name such as {path / 'image.png'}.")
    prepare_output_dir(path.parent, flag)
    return path


def check_device(device: str) -> str:
    """``device`` if this torch can use it, else a one-line error naming what can run here."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {device!r} is not a torch device; use cpu, cuda, cuda:0 or mps.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {device}: this torch build sees no CUDA GPU; use --device cpu "
                       "(or install a CUDA build of torch on a machine with a GPU).")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise CLIError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CLIError(f"--device {device}: MPS is not available here; use --device cpu.")
    return device


def method_options(method: str, options: dict[str, Any], threshold: float | None = None,
                   warmup: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """The settings of ``method`` from ``--set`` options and the ``--threshold`` / ``--warmup`` shortcuts,
    checked against the method's real settings; also notes saying what a shortcut set."""
    from etcdiff import get_method

    info = get_method(method)
    options = dict(options)
    notes: list[str] = []
    if threshold is not None:
        if info.threshold is None:
            raise CLIError(f"--threshold: method {method!r} has no tolerance setting; its settings are "
                           f"{', '.join(info.settings_names()) or 'none'} (pass them with --set KEY=VALUE).")
        options[info.threshold] = threshold
        if info.threshold != "threshold":
            notes.append(f"--threshold sets {method}'s {info.threshold}")
    if warmup is not None:
        options["warmup"] = warmup
    try:
        return info.check_settings(options), notes
    except ValueError as e:
        raise CLIError(f"{e} Pass settings as --set KEY=VALUE.") from None


def timing(values: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles and count of repeated wall-clock times (seconds)."""
    vals = sorted(values)
    if len(vals) >= 2:
        q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
    else:
        q1 = q3 = vals[0]
    return {"median": statistics.median(vals), "q1": q1, "q3": q3, "repeats": len(vals), "all": list(values)}


def noisy(wall_speedup: float | None, work_speedup: float | None, tolerance: float = 0.10) -> bool:
    """A wall-clock speedup more than ``tolerance`` above the reduction in work (calls or FLOPs) cannot come
    from the method: the machine's load changed between runs."""
    return bool(wall_speedup and work_speedup and wall_speedup > work_speedup * (1 + tolerance))
