"""SenCache at a step count it was not calibrated at: tables calibrated at 20 steps against the shipped tables
calibrated at 50 steps, both used for 20-step runs. Digits model, calibration prompts 0-7 seed 42 (20 steps);
evaluation prompts 0-9 seed 0; eps_start 0.005, K 10, eps_main 0.3, 0.6, 1.0; PSNR against the full run.
Usage: PYTHONPATH=src python scripts/sencache_step_counts.py"""
import json, math, warnings, torch, numpy as np, etcdiff
from pathlib import Path
from etcdiff.calibrate import calibrate_method
from etcdiff.models import load_pipeline
from etcdiff.policies.step.sencache import SenCacheTables
torch.set_num_threads(1)
warnings.simplefilter("ignore")
pipe = load_pipeline("digits"); pipe.set_progress_bar_config(disable=True)
shipped = json.loads((Path(etcdiff.__file__).parent / "data/profiles/digits_50steps_sencache.json").read_text())["settings"]["tables"]
own = calibrate_method(pipe, "sencache", list(range(8)), 20, seed=42)["tables"]
t50, t20 = SenCacheTables.from_dict(shipped), SenCacheTables.from_dict(own)
rel = [(abs(t50.lookup(t)[0] - jx) / jx, abs(t50.lookup(t)[1] - jt) / jt) for t, jx, jt in zip(t20.timesteps, t20.j_x, t20.j_t)]
print(f"tables at the 20-step timesteps, 50-step lookup vs 20-step: median |rel diff| J_x {np.median([r[0] for r in rel]):.3f}, "
      f"J_t {np.median([r[1] for r in rel]):.3f}; max J_x {max(r[0] for r in rel):.3f}, J_t {max(r[1] for r in rel):.3f}")
prompts = list(range(10))
def run(**kw):
    if kw: etcdiff.enable(pipe, "sencache", **kw)
    out = pipe(prompts, num_inference_steps=20, generator=torch.Generator().manual_seed(0), output_type="np").images
    calls = etcdiff.summary(pipe)["model_calls"] if kw else None
    etcdiff.disable(pipe)
    return out, calls
full, _ = run()
for eps in ({"eps_main": 0.3}, {"eps_main": 0.6}, {"eps_main": 1.0}):
    for label, tables in (("50-step tables", shipped), ("20-step tables", own)):
        img, calls = run(tables=tables, **eps)
        ps = [10 * math.log10(1.0 / max(float(((img[i] - full[i]) ** 2).mean()), 1e-20)) for i in range(len(prompts))]
        print(f"20-step runs, {label}, {eps or 'default eps'}: calls {calls} PSNR mean {np.mean(ps):.2f} dB (min {min(ps):.2f})", flush=True)
