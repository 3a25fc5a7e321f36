"""Published ETC tolerances (paper Tables 1 and 3).

Each was searched for a given step count; at another step count the per-step output differences change and
the tolerance no longer means the same thing (calibrate instead: ``etcdiff calibrate``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ETCPreset:
    model: str
    threshold: float
    warmup: int
    steps: int
    aliases: tuple[str, ...]


ETC_PRESETS: tuple[ETCPreset, ...] = (
    ETCPreset("FLUX.1-dev", 0.1269, 6, 50, ("flux", "flux.1-dev", "black-forest-labs/flux.1-dev")),
    ETCPreset("SDXL", 0.0171, 6, 50, ("sdxl", "stable-diffusion-xl", "stabilityai/stable-diffusion-xl-base-1.0")),
    ETCPreset("Wan 2.1 14B", 0.1181, 6, 50, ("wan", "wan2.1", "wan-2.1", "wan-ai/wan2.1-t2v-14b-diffusers")),
    ETCPreset("TangoFlux", 0.0675, 6, 50, ("tangoflux", "declare-lab/tangoflux")),
    ETCPreset("Open-Sora 1.2", 0.1684, 4, 30, ("opensora", "open-sora", "open-sora-1.2")),
)


def find_preset(name: str) -> ETCPreset | None:
    """The published preset of a family name or hub id, or ``None``."""
    key = name.strip().lower()
    for p in ETC_PRESETS:
        if key == p.model.lower() or key in p.aliases:
            return p
    return None


def unknown_preset_message(name: str) -> str:
    known = ", ".join(f"{p.aliases[0]!r} ({p.model}, {p.steps} steps)" for p in ETC_PRESETS)
    return f"No published ETC preset for {name!r}. Known: {known}. For another model run `etcdiff calibrate`."
