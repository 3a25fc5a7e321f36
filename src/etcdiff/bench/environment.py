"""Where a sweep ran: the weights' fingerprint, package versions and the machine, written into ``sweep.json``."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import sys
from typing import Any

import numpy as np
import torch

from ..integration.denoisers import find_denoisers


def model_fingerprint(pipe: Any) -> str:
    """A cheap hash of the denoisers' weights (names, shapes and 64 strided values per tensor)."""
    h = hashlib.sha1()
    for mod_name, module in sorted(find_denoisers(pipe).items()):
        for name, p in sorted(module.state_dict().items()):
            h.update(f"{mod_name}.{name}{tuple(p.shape)}{p.dtype}".encode())
            if p.numel() and p.device.type != "meta":
                flat = p.detach().reshape(-1)
                sample = flat[:: max(1, flat.numel() // 64)][:64].float().cpu().numpy()
                h.update(sample.tobytes())
    return h.hexdigest()[:16]


def versions() -> dict[str, str]:
    """The versions of etcdiff and of the packages the measurements depend on."""
    import diffusers

    from .. import __version__

    out = {"etcdiff": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
           "numpy": np.__version__, "python": platform.python_version()}
    for name in ("skimage", "accelerate", "transformers"):
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, "__version__"):
            out["scikit-image" if name == "skimage" else name] = mod.__version__
    return out


def machine() -> dict[str, Any]:
    """Host, platform, CPU count, torch threads and GPU, if any."""
    return {"host": socket.gethostname(), "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
