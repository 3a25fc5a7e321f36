"""Train the digit classifier of ``etcdiff bench``: ``python -m etcdiff.bench.train_classifier [--seed 0]``.

Data: scikit-learn's bundled digits (1797 images, no download), 8x8 upsampled bilinearly to 16x16 exactly as
the demo model's training data (:func:`etcdiff.digits.train.load_data`), mapped to [0, 1]. A stratified 80/20
split (seeded) gives the test set. Augmentation makes it robust on generated digits: random translations of
up to one pixel (:func:`etcdiff.digits.train.random_shift`), random contrast and brightness, Gaussian noise.
Seeded and single-threaded, so the same seed gives the same weights; a few seconds on a CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .classifier import CLASSIFIER_PATH, DigitClassifier


def load_split(seed: int = 0, test_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): images ``[N, 1, 16, 16]`` in [-1, 1] (the demo model's range)."""
    from ..digits.train import load_data
    from ..optional import require

    train_test_split = require("sklearn.model_selection", "train", "training the digit classifier",
                               "scikit-learn").train_test_split
    x, y = load_data()
    idx_train, idx_test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=test_fraction, random_state=seed, stratify=y.numpy()
    )
    return x[idx_train], y[idx_train], x[idx_test], y[idx_test]


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Shift (up to 1 px, in [-1, 1] space, background -1), then to [0, 1] with contrast/brightness jitter and noise."""
    from ..digits.train import random_shift

    n = x.shape[0]
    x = (random_shift(x, g, max_shift=1) + 1.0) / 2.0
    contrast = 0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=g)
    brightness = 0.08 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    noise = torch.randn(x.shape, generator=g) * 0.06 * torch.rand(n, 1, 1, 1, generator=g)
    return (x * contrast + brightness + noise).clamp(0.0, 1.0)


@torch.no_grad()
def accuracy(model: DigitClassifier, x01: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x01).argmax(dim=1) == y).float().mean())


def train(
    out: Path = CLASSIFIER_PATH, seed: int = 0, epochs: int = 40, batch_size: int = 64, lr: float = 3e-3, quiet: bool = False
) -> dict[str, float]:
    """Train, save to ``out`` (safetensors with the training record as metadata), return the accuracies."""
    from safetensors.torch import save_file

    t0 = time.time()
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(seed)
        x_train, y_train, x_test, y_test = load_split(seed)
        model = DigitClassifier()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        steps_per_epoch = (len(y_train) + batch_size - 1) // batch_size
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(len(y_train), generator=g)
            total = 0.0
            for i in range(steps_per_epoch):
                idx = perm[i * batch_size : (i + 1) * batch_size]
                loss = F.cross_entropy(model(augment(x_train[idx], g)), y_train[idx], label_smoothing=0.05)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            if not quiet and ((epoch + 1) % 10 == 0 or epoch + 1 == epochs):
                print(f"epoch {epoch + 1:3d}  loss {total / len(y_train):.4f}  "
                      f"test acc {accuracy(model, (x_test + 1) / 2, y_test):.4f}  {time.time() - t0:.1f}s")
        model.eval()
        test01 = (x_test + 1) / 2
        g_eval = torch.Generator().manual_seed(seed + 1)
        result = {
            "test_accuracy": accuracy(model, test01, y_test),
            "test_accuracy_shifted": accuracy(model, _shifted(x_test, g_eval), y_test),
            "train_accuracy": accuracy(model, (x_train + 1) / 2, y_train),
            "seconds": time.time() - t0,
        }
    finally:
        torch.set_num_threads(threads)
    meta = {
        "seed": str(seed), "epochs": str(epochs), "batch_size": str(batch_size), "lr": str(lr),
        "data": "sklearn load_digits, 8x8 bilinear to 16x16, [0,1]; stratified 80/20 split",
        "n_train": str(len(y_train)), "n_test": str(len(y_test)),
        **{k: f"{v:.4f}" for k, v in result.items()},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in model.state_dict().items()}, str(out), metadata=meta)
    if not quiet:
        print(json.dumps(result, indent=2))
        print(f"saved {out} ({out.stat().st_size / 1e3:.0f} kB)")
    return result


def _shifted(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The test set with a random 1-pixel translation of each image, in [0, 1]."""
    from ..digits.train import random_shift

    return (random_shift(x, g, max_shift=1) + 1.0) / 2.0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the digit classifier used by `etcdiff bench` on the demo model.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--out", type=Path, default=CLASSIFIER_PATH)
    a = p.parse_args(argv)
    train(out=a.out, seed=a.seed, epochs=a.epochs)


if __name__ == "__main__":
    from ..optional import run_script

    run_script(main)
