"""Train the embedded demo model: ``python -m etcdiff.digits.train [--steps N] [--out PATH] [--seed 0]``.

Rectified flow / flow matching, consistent with ``FlowMatchEulerDiscreteScheduler`` (shift=1):
``x_s = (1 - s) * x0 + s * noise``, target velocity ``noise - x0``, timestep ``s * 1000``, with ``s`` drawn
logit-normally. Labels are dropped to ``NULL_CLASS`` with probability ``--p-uncond`` for classifier-free
guidance. The EMA weights are saved as safetensors (fp32 if < 10 MB, else fp16).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .model import CONFIG, NULL_CLASS, NUM_CLASSES, SAMPLE_SIZE, WEIGHTS_PATH, build_transformer

MAX_BYTES = 10 * 1024 * 1024


def load_data() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn digits, upsampled bilinearly to 16x16 and scaled to [-1, 1]; returns (images [N,1,16,16], labels)."""
    from ..optional import require

    d = require("sklearn.datasets", "train", "training the digits model (its data set)", "scikit-learn").load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(SAMPLE_SIZE, SAMPLE_SIZE), mode="bilinear", align_corners=False)
    return (x * 2.0 - 1.0).clamp(-1.0, 1.0), torch.tensor(d.target, dtype=torch.long)


def random_shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Augmentation: translate each image by up to ``max_shift`` pixels, padding with background (-1)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx, dy = (torch.randint(0, 2 * max_shift + 1, (2, n), generator=g)).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def save_weights(model: torch.nn.Module, out: Path, metadata: dict[str, str]) -> None:
    """Save a state dict as safetensors, in fp32 if it fits under 10 MB, else fp16."""
    from safetensors.torch import save_file

    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    if sum(v.numel() * 4 for v in state.values()) >= MAX_BYTES:
        state = {k: v.half() for k, v in state.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata=metadata)


def make_optimizer(
    model: torch.nn.Module, lr: float, warmup: int, steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with a linear warm-up over ``warmup`` steps, then a cosine decay to 0.1 of ``lr`` at ``steps``."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / steps)))
    )
    return opt, sched


def optimizer_step(
    model: torch.nn.Module,
    ema: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    loss: torch.Tensor,
    step: int,
    ema_decay: float,
) -> None:
    """Backpropagate ``loss``, clip gradients to norm 1, step the optimizer and schedule, and update the EMA."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    with torch.no_grad():
        d = min(ema_decay, (1 + step) / (10 + step))
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - d)


def train(
    steps: int = 2200,
    out: Path = WEIGHTS_PATH,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 1e-3,
    warmup: int = 200,
    ema_decay: float = 0.998,
    p_uncond: float = 0.1,
    augment: bool = False,
    log_every: int = 100,
) -> float:
    """Train the demo DiT and save its EMA weights to ``out``; returns the final (smoothed) loss."""
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(seed)
    x_all, y_all = load_data()

    model = build_transformer().train()
    for m in model.modules():  # disable DiT's built-in (per-block, independent) label dropout; we drop ourselves
        if hasattr(m, "token_drop"):
            m.dropout_prob = 0.0
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt, sched = make_optimizer(model, lr, warmup, steps)

    smooth, t0 = None, time.time()
    bar = tqdm(range(steps), desc="train digits DiT")
    for step in bar:
        idx = torch.randint(0, len(x_all), (batch_size,), generator=g)
        x0, y = x_all[idx], y_all[idx]
        if augment:
            x0 = random_shift(x0, g)
        y = torch.where(torch.rand(batch_size, generator=g) < p_uncond, torch.full_like(y, NULL_CLASS), y)
        noise = torch.randn(x0.shape, generator=g)
        s = torch.sigmoid(torch.randn(batch_size, generator=g))  # logit-normal(0, 1)
        xs = (1 - s[:, None, None, None]) * x0 + s[:, None, None, None] * noise
        pred = model(xs, timestep=s * 1000, class_labels=y, return_dict=False)[0]
        loss = F.mse_loss(pred, noise - x0)

        optimizer_step(model, ema, opt, sched, loss, step, ema_decay)

        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        bar.set_postfix(loss=f"{smooth:.4f}")
        if (step + 1) % log_every == 0 or step + 1 == steps:
            tqdm.write(f"step {step + 1:5d}  loss {smooth:.4f}  lr {sched.get_last_lr()[0]:.2e}  {time.time() - t0:.0f}s")

    meta = dict(config=json.dumps(CONFIG), steps=str(steps), seed=str(seed), final_loss=f"{smooth:.4f}",
                num_classes=str(NUM_CLASSES), null_class=str(NULL_CLASS))
    save_weights(ema, Path(out), meta)
    print(f"saved EMA weights to {out} ({Path(out).stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.0f}s")
    return smooth


def train_parser(description: str, steps: int, out: Path, batch_size: int, lr: float) -> argparse.ArgumentParser:
    """The command line both digits trainers share: --steps, --out, --seed, --batch-size, --lr, with these defaults."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--out", type=Path, default=out)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    return p


def main(argv: list[str] | None = None) -> None:
    p = train_parser("Train etcdiff's embedded digits demo model (CPU, a few minutes).", 2200, WEIGHTS_PATH, 64, 1e-3)
    p.add_argument("--augment", action="store_true", help="random +-1 px translations")
    a = p.parse_args(argv)
    train(steps=a.steps, out=a.out, seed=a.seed, batch_size=a.batch_size, lr=a.lr, augment=a.augment)


if __name__ == "__main__":
    from ..optional import run_script

    run_script(main)
