"""Overhead of etc-plus's own per-step tensor math on the demo, against a full run, as the hook overhead is measured.

An embedded model (``--model demo``, the scenes FLUX, or ``digits``), its demo prompts in one batch, 50 steps, its
default guidance, seed 0 (as ``scripts/hook_overhead.py``). The profile is fitted on two recorded runs (seeds 100,
101; no probes: they change the plan, not the run-time math). Two figures:

1. instrumented: the time spent inside the policy and its CFG streams (decisions, estimates, the online error
   measurement) during an etc-plus run at ``--calls``, over the median bare full-step run;
2. paired: etc-plus with tolerance 0 (it then runs the model on every step but still measures its error and
   re-plans at each one) against the NoCache hook, interleaved ABBA, median of the per-pair ratios.

Usage: python scripts/etc_plus_overhead.py [--model demo] [--repeats 10] [--calls 12] [--threads 1]
"""

import argparse
import statistics
import time
from functools import wraps

import torch

import etcdiff
from etcdiff.models import load_pipeline
from etcdiff.integration.step.recording import record_pipeline
from etcdiff.policies.step.etc_plus.policy import ETCPlus, ETCPlusStream, fit_etc_plus


def instrument(acc: list[float]) -> None:
    """Add the wall time of every etc-plus method call to ``acc[0]`` (outermost calls only)."""
    depth = [0]

    def timed(fn):
        @wraps(fn)
        def inner(*a, **k):
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    acc[0] += time.perf_counter() - t0
        return inner

    for cls, names in ((ETCPlus, ("begin", "use_schedule", "should_compute", "predict", "observe", "new_stream")),
                       (ETCPlusStream, ("record", "predict"))):
        for n in names:
            setattr(cls, n, timed(getattr(cls, n)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--calls", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="demo", help="an embedded model: demo (scenes) or digits")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(prompt=list(pipe.etcdiff_demo_prompts), num_inference_steps=50, guidance_scale=pipe.etcdiff_guidance,
              output_type="latent")
    trajs = [record_pipeline(pipe, generator=torch.Generator().manual_seed(s), **kw)[0] for s in (100, 101)]
    profile = fit_etc_plus(trajs)

    def run() -> float:
        t0 = time.perf_counter()
        pipe(generator=torch.Generator().manual_seed(0), **kw)
        return time.perf_counter() - t0

    run()
    bare, paired = [], []
    nocache, every_step = etcdiff.NoCache(), ETCPlus(profile, tolerance=0.0)

    def hooked(policy) -> float:
        with etcdiff.enabled(pipe, policy):
            return run()

    for i in range(args.repeats):  # ABBA: etc-plus computing every step vs the NoCache hook
        order = (nocache, every_step) if i % 2 == 0 else (every_step, nocache)
        times = {id(p): hooked(p) for p in order}
        paired.append(times[id(every_step)] / times[id(nocache)])
        bare.append(run())
    acc = [0.0]
    instrument(acc)
    policy_times = []
    with etcdiff.enabled(pipe, ETCPlus(profile, calls=args.calls)):
        run()  # the first generation also builds the plan (once per policy object)
        first = acc[0]
        for _ in range(args.repeats):
            acc[0] = 0.0
            run()
            policy_times.append(acc[0])
        rep = etcdiff.last_report(pipe)
    full = statistics.median(bare)
    print(f"{args.model}, {len(kw['prompt'])} prompts in a batch, 50 steps, guidance {kw['guidance_scale']}")
    print(f"bare full run median {full * 1000:.1f} ms; etc-plus calls={args.calls}: {rep.num_computed} real steps")
    print(f"instrumented: etc-plus's own math {statistics.median(policy_times) * 1000:.2f} ms per generation = "
          f"{100 * statistics.median(policy_times) / full:.2f} % of a full run "
          f"(first generation, with the plan built: {first * 1000:.1f} ms = {100 * first / full:.2f} %)")
    print(f"paired: etc-plus at tolerance 0 (every step real, measuring each) vs the NoCache hook: "
          f"{100 * (statistics.median(paired) - 1):+.2f} % (median of {args.repeats} pairs)")


if __name__ == "__main__":
    main()
