"""MeanCache on the multistep flow solvers: it runs there (docs/methods.md says so, with figures) and keeps its
budget; second-order and non-flow schedulers are refused."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

import etcdiff

DOCS = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


def _meancache_section() -> str:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("## MeanCache")
    return text[start:text.index("\n## ", start + 1)]


def test_docs_say_what_meancache_does_on_multistep_solvers():
    section = _meancache_section()
    assert "UniPC" in section and "DPM-Solver++" in section and "runs on" in section
    assert "scripts/meancache_multistep.py" in section


SHIPPED_MEANCACHE = Path(etcdiff.__file__).parent / "data" / "profiles" / "digits_50steps_meancache.json"


def test_meancache_runs_on_unipc_and_dpm_solver_with_its_budget(pipe):
    for scheduler in (UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction"),
                      DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")):
        pipe.scheduler = scheduler
        etcdiff.enable(pipe, "meancache", calls=17, profile=str(SHIPPED_MEANCACHE))  # made on Euler runs: given by path
        images = pipe([1, 7], num_inference_steps=50, generator=torch.Generator().manual_seed(0), output_type="np").images
        assert etcdiff.last_report(pipe).num_computed == 17 and bool(torch.isfinite(torch.as_tensor(images)).all())
