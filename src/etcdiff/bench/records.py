"""The sweep's files on disk: one JSONL file of records per process, appended run by run, so a sweep resumes.

``DIR/runs/rank<R>.jsonl`` holds the finished runs of process ``R`` and ``DIR/runs/rank<R>.errors`` the runs that
raised; ``DIR/sweep.json`` the sweep's configuration; ``DIR/reference/<pair key>.npz`` the full-step references.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import atomic_write_text

RUNS_DIR = "runs"
REFERENCE_DIR = "reference"
SWEEP_FILE = "sweep.json"


def runs_dir(out: Path) -> Path:
    """The folder of the per-process record files."""
    return Path(out) / RUNS_DIR


def _json_lines(out: Path, pattern: str) -> list[Any]:
    """The JSON values of every line of the files ``out/runs/<pattern>``; a line that is not UTF-8 JSON (cut by
    a crash, or damaged) is skipped with a warning naming the file and the line."""
    values = []
    for path in sorted(runs_dir(out).glob(pattern)):
        try:
            data = path.read_bytes()
        except OSError as e:
            raise OSError(f"cannot read the bench records {path} ({e.strerror}); fix its permissions or move it "
                          "out of the runs folder.") from None
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                values.append(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                warnings.warn(f"etcdiff bench: skipping line {number} of {path}: not a complete JSON record "
                              "(cut by a crash, or damaged); that run is run again if the sweep needs it.",
                              UserWarning, stacklevel=2)
    return values


def check_out_folder(out: Path) -> None:
    """``out`` and its ``runs``/``reference`` folders are folders (or absent), else one line naming the path."""
    out = Path(out)
    for path in (out, runs_dir(out), out / REFERENCE_DIR):
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"--out {out}: {path} is a file, not a folder; move it away or choose "
                                     "another --out.")


def read_records(out: Path) -> list[dict[str, Any]]:
    """Every complete record of every JSONL shard in ``out/runs``."""
    return [rec for rec in _json_lines(out, "*.jsonl") if isinstance(rec, dict) and "key" in rec]


def read_errors(out: Path) -> list[dict[str, Any]]:
    """The runs that raised, from ``out/runs/*.errors`` (they run again on the next sweep)."""
    return _json_lines(out, "*.errors")


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a JSON line and sync it to disk (a run is kept as soon as it is finished)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, default=json_default)
    with open(path, "a+b") as f:  # a shard cut mid-line by a crash: start on a fresh line
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(line.encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def json_default(o: Any) -> Any:
    """JSON for numpy scalars and arrays and paths; ``repr`` for anything else."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return repr(o)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON through a unique temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, default=json_default))


def reference_path(out: Path, pair_key: str) -> Path:
    """Where the full-step reference of a (prompt, seed) pair is kept."""
    return Path(out) / REFERENCE_DIR / f"{pair_key}.npz"


def load_reference(out: Path, pair_key: str) -> dict[str, Any] | None:
    """The saved reference of a pair (its metadata, ``images`` and ``latents``), or None if absent or unreadable."""
    path = reference_path(out, pair_key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            latents = torch.from_numpy(z["latents"].copy()) if "latents" in z.files else None
            ref = {**meta, "images": z["images"].copy(), "latents": latents}
    except (OSError, ValueError, KeyError):
        return None  # a crash while writing: generate again
    return ref if meta.get("pair_key") == pair_key else None


def save_reference(out: Path, pair_key: str, meta: dict[str, Any], images: np.ndarray, latents: torch.Tensor | None) -> None:
    """Save a reference atomically (a temporary file renamed into place)."""
    path = reference_path(out, pair_key)
    arrays = {"images": images, "meta": np.array(json.dumps(meta, default=json_default))}
    if latents is not None:
        arrays["latents"] = latents.numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
