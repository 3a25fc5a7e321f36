"""What a sweep runs: the settings grid per method, the prompts, the (prompt, seed) pairs, and the key of each run.

A run's key (model, weights fingerprint, steps, guidance, prompt, seed, method, setting, repeats, device, FLOP
mode, and for a method's run the profile it runs and etcdiff's own code) is what a resumed sweep looks for in the
records already on disk.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from ..models import DEMO, demo_prompts

REFERENCE_METHOD = "none"


@dataclass(frozen=True)
class MethodSetting:
    """One method with one set of keyword arguments for ``etcdiff.enable(pipe, method, **setting)``."""

    method: str
    setting: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.setting)

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_fmt_value(v)}" for k, v in self.setting) or "default"

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "setting": self.kwargs, "label": self.label}


def _fmt_value(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_settings(text: str | None) -> dict[str, list[dict[str, Any]]]:
    """``'etc:threshold=0.05,0.1;fixed:interval=2,3 warmup=1,2'`` -> the settings grid of each method.

    Groups are separated by ``;``; in a group ``METHOD:`` is followed by ``KEY=V1,V2,...`` items separated by
    spaces, and the group gives the Cartesian product of its items. Values are JSON (numbers, true/false,
    null), anything else is a string. A method may appear in several groups; its settings are concatenated.
    """
    grid: dict[str, list[dict[str, Any]]] = {}
    if not text:
        return grid
    for group in text.split(";"):
        group = group.strip()
        if not group:
            continue
        if ":" not in group:
            raise ValueError(f"--settings: expected METHOD:KEY=V1,V2 in {group!r}")
        method, _, rest = group.partition(":")
        method = method.strip()
        if not method:
            raise ValueError(f"--settings: missing method name in {group!r}")
        combos: list[dict[str, Any]] = [{}]
        for item in rest.split():
            if "=" not in item:
                raise ValueError(f"--settings: expected KEY=V1,V2 in {item!r} (method {method})")
            key, _, values = item.partition("=")
            vals = [_parse_value(v) for v in values.split(",") if v != ""]
            if not key or not vals:
                raise ValueError(f"--settings: empty key or values in {item!r} (method {method})")
            combos = [{**c, key: v} for c in combos for v in vals]
        grid.setdefault(method, []).extend(combos)
    return grid


def build_grid(methods: Iterable[str] | None, settings: str | dict[str, list[dict[str, Any]]] | None) -> list[MethodSetting]:
    """The list of runs per pair: each method with each of its settings (or its defaults if none given)."""
    grid = parse_settings(settings) if isinstance(settings, str) or settings is None else settings
    names = [m.strip() for m in (methods or []) if m.strip()] or list(grid)
    if not names:
        raise ValueError("no method to benchmark: give --methods (e.g. etc,fixed) or --settings")
    unknown = sorted(set(grid) - set(names))
    if unknown:
        raise ValueError(f"--settings names {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} not in --methods")
    from .. import get_method

    out: list[MethodSetting] = []
    for name in dict.fromkeys(names):
        method = get_method(name)  # unknown names and settings fail here, before any model loads
        for s in grid.get(name) or [{}]:
            ms = MethodSetting(name, tuple(method.check_settings(s).items()))
            if ms not in out:
                out.append(ms)
    return out


def read_prompts(spec: str | Path | list[str], model: str = DEMO) -> list[str]:
    """``"demo"`` (``model``'s demo prompts, :func:`etcdiff.models.demo_prompts`), a list, or a text file with one
    prompt per line (blank lines and # skipped)."""
    if isinstance(spec, list):
        prompts = [str(p) for p in spec]
    elif str(spec) == DEMO:
        prompts = demo_prompts(model)
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"prompt file {path} not found (use --prompts demo for the model's demo prompts)")
        prompts = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise ValueError("no prompts to benchmark")
    return prompts


@dataclass
class BenchConfig:
    """A sweep: the model, the method x setting grid, prompts x seeds, steps, repeats and where it all goes."""

    model: str = DEMO
    grid: list[MethodSetting] = field(default_factory=list)
    prompts: list[str] = field(default_factory=demo_prompts)
    seeds: list[int] = field(default_factory=lambda: [0])
    steps: int = 50
    repeats: int = 3
    guidance: float | None = None
    out: Path = Path("etcdiff-out/bench")
    device: str = "cpu"
    flops: str = "per-call"  # or "direct"
    threads: int | None = None
    scheduler: str | None = None  # a sampler of etcdiff.models.SCHEDULERS instead of the pipeline's own

    def validate(self) -> None:
        """Raise ValueError naming the option to fix."""
        if self.steps < 2:
            raise ValueError("--steps must be at least 2")
        if self.repeats < 0:
            raise ValueError("--repeats must be 0 (no timing: quality, calls and FLOPs only) or more, got "
                             f"{self.repeats}")
        if self.flops not in ("per-call", "direct"):
            raise ValueError(f"--flops must be per-call or direct, got {self.flops!r}")
        if not self.grid:
            raise ValueError("no method to benchmark")
        if not self.seeds:
            raise ValueError("no seeds to benchmark")

    def pairs(self) -> list[tuple[int, str, int]]:
        """``(prompt index, prompt, seed)`` for every pair, prompts outer."""
        return [(i, p, s) for i, p in enumerate(self.prompts) for s in self.seeds]

    def shard(self, rank: int, world: int) -> list[tuple[int, str, int]]:
        """The pairs process ``rank`` of ``world`` runs: every ``world``-th pair, round-robin."""
        return self.pairs()[rank::world]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["grid"] = [ms.as_dict() for ms in self.grid]
        d["out"] = str(self.out)
        if d["scheduler"] is None:  # sweeps on the pipeline's own scheduler keep the identity they had
            del d["scheduler"]
        return d


# -- keys ----------------------------------------------------------------------------------------------------------
def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pair_key(config: BenchConfig, fingerprint: str, prompt: str, seed: int) -> str:
    """The identity of a (prompt, seed) pair on this model and sampling setup: the name of its saved reference."""
    key = {"model": config.model, "fingerprint": fingerprint, "steps": config.steps, "guidance": config.guidance,
           "prompt": prompt, "seed": seed, "device": config.device}
    if config.scheduler is not None:  # another sampler makes another reference
        key["scheduler"] = config.scheduler
    return _hash(key)


def run_key(config: BenchConfig, fingerprint: str, prompt: str, seed: int, ms: MethodSetting | None,
            inputs: dict[MethodSetting, str | None] | None = None) -> str:
    """The identity of one run; ``ms=None`` is the reference's own record. ``inputs``: per setting, the digest of
    what it runs with (:func:`etcdiff.bench.enabling.resolve_setting`), so a changed profile file is a new run; a
    method's run also carries :func:`code_digest`, so a sweep resumed after etcdiff changed runs it again."""
    key = {"pair": pair_key(config, fingerprint, prompt, seed), "method": None if ms is None else ms.method,
           "setting": None if ms is None else ms.kwargs, "repeats": config.repeats, "flops": config.flops,
           "inputs": None if ms is None or inputs is None else inputs.get(ms)}
    if ms is not None:
        key["code"] = code_digest()
    return _hash(key)


@lru_cache(maxsize=None)
def code_digest(root: Path = Path(__file__).resolve().parent.parent) -> str:
    """A digest of etcdiff's Python source (every ``.py`` file under ``root``, by relative path and content)."""
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def sweep_id(config: BenchConfig, fingerprint: str) -> str:
    """The identity of the whole sweep (every process of one sweep has the same)."""
    return _hash({"config": {k: v for k, v in config.to_json().items() if k not in ("out", "threads")}, "fingerprint": fingerprint})


def expected_keys(config: BenchConfig, fingerprint: str,
                  inputs: dict[MethodSetting, str | None] | None = None) -> list[str]:
    """Every run key of the sweep, pair by pair: the reference first, then the grid in order."""
    keys = []
    for _, prompt, seed in config.pairs():
        keys += [run_key(config, fingerprint, prompt, seed, ms, inputs) for ms in (None, *config.grid)]
    return keys
