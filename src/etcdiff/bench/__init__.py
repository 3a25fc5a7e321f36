"""``etcdiff bench``: speed against fidelity for any method ``etcdiff.enable`` accepts, against the full-step run.

* :mod:`.schedule`: what runs: the settings grid, prompts, (prompt, seed) pairs, run keys (:class:`BenchConfig`).
* :mod:`.enabling`: the one place the bench puts a method x setting on a pipeline and takes it off.
* :mod:`.measure`: one run: images, latents, model calls, FLOPs, latency, fidelity to the reference.
* :mod:`.records`: the files of a sweep: per-process JSONL records, saved references, ``sweep.json``.
* :mod:`.processes`: rank, world size and the barrier of a multi-process sweep (``torch.distributed``, gloo).
* :mod:`.runner`: the sweep loop with resume, and :func:`run_bench`.
* :mod:`.merge`: the records of all processes into ``results.json`` and a summary row per method x setting.
* :mod:`.report`: ``results.csv``, ``report.md``, ``pareto.png``.
* :mod:`.environment`: weights fingerprint, versions, machine.
* :mod:`.flops`: denoiser FLOPs with ``torch.utils.flop_counter.FlopCounterMode``.
* :mod:`.fidelity`: SSIM, PSNR, LPIPS / CLIP score when their weights are on disk, the digit classifier's agreement.
* :mod:`.classifier`, :mod:`.train_classifier`: the small digit CNN for the demo model.
"""

from .merge import merge
from .runner import BenchResult, run_bench
from .sweep import BenchConfig, MethodSetting, build_grid, parse_settings, read_prompts

__all__ = ["BenchConfig", "BenchResult", "MethodSetting", "build_grid", "merge", "parse_settings", "read_prompts", "run_bench"]
