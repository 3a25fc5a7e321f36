"""MeanCache on multistep solvers: digits model, 50 steps, calls=17, prompts 0-7, seed 0; PSNR against the full
run on the same scheduler. Usage: PYTHONPATH=src python scripts/meancache_multistep.py"""
import math, warnings, torch, numpy as np, etcdiff
from diffusers import UniPCMultistepScheduler, DPMSolverMultistepScheduler
from etcdiff.models import load_pipeline
torch.set_num_threads(1)
warnings.simplefilter("ignore")
pipe = load_pipeline("digits"); pipe.set_progress_bar_config(disable=True)
euler = pipe.scheduler
print("euler config:", dict(euler.config))
shift = euler.config.get("shift", 1.0)
scheds = {
    "FlowMatchEuler": euler,
    "UniPC (flow, bh2)": UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift),
    "DPM-Solver++ 2M (flow)": DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift),
}
prompts = list(range(8))
def psnr(a, b):
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
for name, s in scheds.items():
    pipe.scheduler = s
    def run(method, **kw):
        if method: etcdiff.enable(pipe, method, **kw)
        out = pipe(prompts, num_inference_steps=50, generator=torch.Generator().manual_seed(0), output_type="np").images
        calls = etcdiff.summary(pipe)["model_calls"] if method else None
        etcdiff.disable(pipe)
        return out, calls
    full, _ = run(None)
    for method, kw in (("meancache", dict(calls=17)), ("fixed", dict(interval=3))):
        try:
            img, calls = run(method, **kw)
            ps = [psnr(img[i], full[i]) for i in range(len(prompts))]
            print(f"{name:24s} {method:9s} calls={calls} PSNR mean {np.mean(ps):.2f} dB (min {min(ps):.2f})")
        except ValueError as e:
            print(f"{name:24s} {method:9s} refused: {e}")
