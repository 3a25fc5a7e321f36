"""Count the etcdiff source files whose code runs during a first ``enable(pipe, "etc-plus", calls=12)`` on the
digits pipeline, and during its first 50-step generation: a measure of how far one call travels in the house.

Run: PYTHONPATH=src python scripts/files_entered.py [SRC_DIR]   (SRC_DIR: another checkout's src/, to compare)
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Callable

src = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src"))
sys.path.insert(0, src)

import torch  # noqa: E402

import etcdiff  # noqa: E402
from etcdiff.models import load_pipeline  # noqa: E402

ROOT = os.path.join(src, "etcdiff")


def entered(fn: Callable[[], object]) -> set[str]:
    """The files under ``src/etcdiff`` in which a function was called while ``fn`` ran."""
    seen: set[str] = set()

    def tracer(frame, event, arg):  # noqa: ANN001 - sys.settrace's signature
        if frame.f_code.co_filename.startswith(ROOT):
            seen.add(os.path.relpath(frame.f_code.co_filename, ROOT))

    sys.settrace(tracer)
    threading.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
        threading.settrace(None)
    return seen


if __name__ == "__main__":
    torch.set_num_threads(1)
    pipe = load_pipeline("digits")
    pipe.set_progress_bar_config(disable=True)
    first = entered(lambda: etcdiff.enable(pipe, "etc-plus", calls=12))
    gen = entered(lambda: pipe("3", num_inference_steps=50, generator=torch.Generator().manual_seed(0)))
    print(f"enable: {len(first)} files: {', '.join(sorted(first))}")
    print(f"generation: {len(gen)} files: {', '.join(sorted(gen))}")
    print(f"model calls: {etcdiff.last_report(pipe).num_computed}")
