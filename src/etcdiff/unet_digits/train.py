"""Train the held-out UNet digits model: ``python -m etcdiff.unet_digits.train [--steps N] [--out PATH]``.

Epsilon prediction under the DDPM linear-beta schedule of :data:`.model.NOISE_SCHEDULE`: ``x_t =
sqrt(a_t)·x0 + sqrt(1 - a_t)·eps`` at a uniform integer ``t`` in [0, 1000), loss ``|unet(x_t, t, tokens(y)) -
eps|²``. Labels are dropped to ``NULL_CLASS`` with probability ``--p-uncond`` for classifier-free guidance. Same
data as the digits DiT (scikit-learn's digits, 16x16, [-1, 1]). The EMA weights of the UNet and the label
encoder are saved in one safetensors file (keys ``unet.*`` and ``labels.*``). The shipped weights are two runs of
800 steps, the second started from the first with ``--init FILE --seed 1 --lr 1e-3`` (21 minutes on one CPU
thread in all; docs/unet-digits).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from ..digits.train import load_data, make_optimizer, optimizer_step, save_weights, train_parser
from .model import NOISE_SCHEDULE, NULL_CLASS, UNET_CONFIG, WEIGHTS_PATH, build_models


class _Both(torch.nn.Module):
    """The UNet and its label encoder as one module, so that one state dict (and one EMA) holds both."""

    def __init__(self) -> None:
        super().__init__()
        self.unet, self.labels = build_models()

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=self.labels(y), return_dict=False)[0]


def train(steps: int = 800, out: Path = WEIGHTS_PATH, seed: int = 0, batch_size: int = 24, lr: float = 1.5e-3,
          warmup: int = 50, ema_decay: float = 0.995, p_uncond: float = 0.1, threads: int = 1,
          log_every: int = 100, save_every: int = 200, init: Path | None = None) -> float:
    """Train the UNet digits model and save its EMA weights to ``out`` (also every ``save_every`` steps, so that an
    interrupted run leaves usable weights); returns the final (smoothed) loss. ``init``: start from saved
    weights (a second stage) instead of a random initialisation."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    x_all, y_all = load_data()
    noise_schedule = DDPMScheduler(**NOISE_SCHEDULE)

    model = _Both().train()
    if init is not None:
        from safetensors.torch import load_file

        model.load_state_dict({k: v.float() for k, v in load_file(str(init)).items()}, strict=True)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt, sched = make_optimizer(model, lr, warmup, steps)

    smooth, t0 = None, time.time()
    for step in range(steps):
        idx = torch.randint(0, len(x_all), (batch_size,), generator=g)
        x0, y = x_all[idx], y_all[idx]
        y = torch.where(torch.rand(batch_size, generator=g) < p_uncond, torch.full_like(y, NULL_CLASS), y)
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, NOISE_SCHEDULE["num_train_timesteps"], (batch_size,), generator=g)
        loss = F.mse_loss(model(noise_schedule.add_noise(x0, noise, t), t, y), noise)

        optimizer_step(model, ema, opt, sched, loss, step, ema_decay)
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            print(f"step {step + 1:5d}  loss {smooth:.4f}  lr {sched.get_last_lr()[0]:.2e}  {time.time() - t0:.0f}s",
                  flush=True)

        if (step + 1) % save_every == 0 or step + 1 == steps:
            _save(ema, Path(out), step + 1, seed, batch_size, smooth, threads, time.time() - t0)
    return smooth


def _save(ema: torch.nn.Module, out: Path, steps: int, seed: int, batch_size: int, loss: float, threads: int,
          seconds: float) -> None:
    params = sum(p.numel() for p in ema.parameters())
    meta = dict(unet_config=json.dumps(UNET_CONFIG), noise_schedule=json.dumps(NOISE_SCHEDULE), steps=str(steps),
                seed=str(seed), batch_size=str(batch_size), final_loss=f"{loss:.4f}", parameters=str(params),
                train_seconds=f"{seconds:.0f}", threads=str(threads))
    save_weights(ema, out, meta)
    print(f"saved EMA weights after {steps} steps ({params} parameters) to {out} ({out.stat().st_size / 1e6:.2f} MB) "
          f"in {seconds:.0f}s", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = train_parser("Train etcdiff's held-out UNet digits model (CPU, about 10 minutes a stage).", 800, WEIGHTS_PATH,
                     24, 1.5e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--init", type=Path, default=None, help="start from these weights (a second stage)")
    a = p.parse_args(argv)
    train(steps=a.steps, out=a.out, seed=a.seed, batch_size=a.batch_size, lr=a.lr, threads=a.threads, init=a.init)


if __name__ == "__main__":
    main()
