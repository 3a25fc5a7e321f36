"""The methods of issue 26 by name on the digits demo (a DiT): ``etcdiff.enable``, then ``etcdiff bench``.

(``etcdiff generate`` runs every registered method in :mod:`test_methods`.) PromptTea finds the profile shipped
for the demo (calibrated on the ten digits, seed 42, 50 steps).
"""

from __future__ import annotations

import json

import pytest
import torch

import etcdiff
from etcdiff.cli import main

RUNNABLE = ("dicache", "h2cache", "prompttea", "diffusers-fastercache", "diffusers-pab")


@pytest.mark.parametrize("method", RUNNABLE)
def test_enable_by_name_on_the_demo(pipe, method):
    plain = pipe(prompt="3", num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="pt").images
    etcdiff.enable(pipe, method)
    out = pipe(prompt="3", num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="pt").images
    report = etcdiff.last_report(pipe)
    assert report.num_steps == 20 and report.stack_skips > 0  # something was reused at the default setting
    assert torch.isfinite(out).all() and out.shape == plain.shape
    etcdiff.disable(pipe)
    again = pipe(prompt="3", num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert torch.equal(again, plain)


def test_bench_by_name_on_the_demo(tmp_path):
    out = tmp_path / "bench"
    (tmp_path / "prompts.txt").write_text("3\n")
    settings = "dicache:threshold=0.4;h2cache:threshold=0.12;prompttea:threshold=0.23;diffusers-pab:;diffusers-fastercache:"
    assert main(["bench", "--model", "digits", "--settings", settings, "--prompts", str(tmp_path / "prompts.txt"), "--seeds", "0", "--steps", "10",
                 "--repeats", "1", "--threads", "1", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and {r["method"] for r in results["runs"]} == {"none", *RUNNABLE}
    assert all(r["nfe"] <= 10 and r["psnr"] > 0 for r in results["runs"])


def test_seacache_on_a_diffusers_without_it_names_the_version(monkeypatch):
    import diffusers.hooks

    from etcdiff.integration.external.peers import enable_external
    from tiny_matrix_pipelines import make_wan

    monkeypatch.delattr(diffusers.hooks, "SeaCacheConfig")
    tp = make_wan()
    with pytest.raises(ImportError, match=r"has no SeaCacheConfig; it ships from diffusers 0\.42\.1"):
        etcdiff.enable(tp.pipe, "diffusers-seacache")
    with pytest.raises(RuntimeError, match=r"diffusers-seacache cannot run here: .*pip install -U 'diffusers>=0\.42\.1'"):
        enable_external(tp.pipe, "diffusers-seacache")
