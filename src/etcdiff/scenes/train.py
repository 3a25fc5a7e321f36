"""Train the scenes model on CPU: ``python -m etcdiff.scenes.train --out DIR [--minutes 60] [--seed 0]``.

1. Render a seeded pool of scenes (``--pool`` images with their objects).
2. Train the VAE for ``--vae-minutes`` (MSE + a small KL term), freeze it, encode the pool to posterior means and
   record the latent shift/scale factors.
3. Train the text encoder and the FLUX transformer jointly with rectified flow, consistent with FluxPipeline's
   scheduler: ``x_s = (1 - s) x0 + s noise``, target ``noise - x0``, ``s`` logit-normal and then shifted by the
   same shift the sampler uses. Captions list the objects in random order and are dropped to the empty caption
   with probability ``--p-uncond`` (true classifier-free guidance). The learning-rate
   schedule (warmup, cosine decay) follows the elapsed fraction of ``--minutes`` so that the run uses its budget
   whatever the machine's load; the steps done are recorded, and ``--steps N`` re-runs with a step-based schedule.

EMA weights (safetensors, fp32) and ``recipe.json`` are written every ``--ckpt-minutes`` so a cut-short run is
still usable; progress goes to stdout (redirect it to a log file).

4. ``--stage decoder`` (optional, may run alongside stage 3): train only the VAE decoder further, the encoder
   frozen, so the transformer's latent space does not move while its decoded images get sharper.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FluxPipeline

from .grammar import Scene, caption, sample_scene
from .model import TEXT_CONFIG, TRANSFORMER_CONFIG, WEIGHTS_DIR, build_text_encoder, build_transformer
from .pipeline import SCHEDULER_CONFIG
from .render import render_uint8
from .vae import VAE_CONFIG, build_vae, encode_mean, set_latent_stats

T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - T0:7.0f}s] {msg}", flush=True)


def sampling_shift() -> float:
    """The shift FluxPipeline applies at 64 image tokens with our scheduler config (exp(mu))."""
    c = SCHEDULER_CONFIG
    m = (c["max_shift"] - c["base_shift"]) / (c["max_image_seq_len"] - c["base_image_seq_len"])
    return math.exp(c["base_shift"] + m * (64 - c["base_image_seq_len"]))


def make_pool(n: int, seed: int) -> tuple[list[Scene], torch.Tensor]:
    """``n`` seeded scenes and their images as float [-1, 1] tensors [n, 3, 64, 64]."""
    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    imgs = np.stack([render_uint8(s) for s in scenes])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return scenes, x


def save(module: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()}, str(path))


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - decay)



def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: Any, ema: torch.nn.Module, model: torch.nn.Module,
          step: int, smooth: float | None, value: float) -> float:
    """One optimiser step with gradient clipping and the EMA update; returns the smoothed ``value``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    ema_update(ema, model, min(0.995, (1 + step) / (10 + step)))
    return value if smooth is None else 0.97 * smooth + 0.03 * value

def train_vae(x: torch.Tensor, minutes: float, g: torch.Generator, batch: int = 32, lr: float = 1e-3,
              kl_weight: float = 1e-4, crop: int = 32, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Train the VAE for a wall-clock budget; returns the EMA VAE (eval) and its stats."""
    vae = build_vae().to(device).train()
    ema = copy.deepcopy(vae).eval().requires_grad_(False)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    step, smooth, t0 = 0, None, time.time()
    while time.time() - t0 < minutes * 60:
        frac = (time.time() - t0) / (minutes * 60)
        for pg in opt.param_groups:
            pg["lr"] = lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        xb = x[torch.randint(0, len(x), (batch,), generator=g)]
        i, j = (torch.randint(0, (64 - crop) // 4 + 1, (2,), generator=g) * 4).tolist()
        xb = xb[:, :, i : i + crop, j : j + crop].to(device)  # the VAE is convolutional: crops are cheaper
        post = vae.encode(xb).latent_dist
        rec = vae.decode(post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(device)).sample
        mse = F.mse_loss(rec, xb)
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()
        loss = mse + kl_weight * kl
        smooth = _step(opt, loss, vae.parameters(), ema, vae, step, smooth, mse.item())
        step += 1
        if step % 50 == 0:
            log(f"vae step {step} mse {smooth:.5f} kl {kl.item():.3f}")
    with torch.no_grad():
        held = x[-64:].to(device)
        rec = ema.decode(ema.encode(held).latent_dist.mean).sample.clamp(-1, 1)
        psnr = float(10 * torch.log10(4.0 / F.mse_loss(rec, held)))
    log(f"vae done: {step} steps, held-out PSNR {psnr:.2f} dB")
    return ema, dict(steps=step, batch=batch, crop=crop, lr=lr, kl_weight=kl_weight, psnr_db=round(psnr, 2),
                     seconds=round(time.time() - t0))


def load_vae(folder: Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """A trained VAE from ``folder`` (its ``vae.safetensors``) and the record of how it was trained."""
    from safetensors.torch import load_file

    vae = build_vae()
    vae.load_state_dict(load_file(str(folder / "vae.safetensors")))
    stats: dict = {"reused_from": str(folder)}
    for name in ("recipe.json", "vae_decoder.json"):
        if (folder / name).is_file():
            record = json.loads((folder / name).read_text())
            stats[name] = record.get("vae", record)
    log(f"vae loaded from {folder}")
    return vae.to(device).eval().requires_grad_(False), stats


def finetune_decoder(out: Path = WEIGHTS_DIR, seed: int = 0, minutes: float = 40.0, pool: int = 6000,
                     batch: int = 16, lr: float = 1e-3, crop: int = 32, threads: int = 1) -> dict:
    """Stage 4 (optional): train only the VAE decoder further, the encoder frozen, on the same pool.

    The latent space is the frozen encoder's, so a transformer trained on it stays valid; only the decode of
    its latents gets sharper. It can run alongside stage 3. Writes ``vae.safetensors`` and ``vae_decoder.json``.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed + 2)
    g = torch.Generator().manual_seed(seed + 2)
    out = Path(out)
    vae, _ = load_vae(out)
    _, x = make_pool(pool, seed)
    held = x[-64:]
    with torch.no_grad():
        psnr0 = float(10 * torch.log10(4.0 / F.mse_loss(vae.decode(vae.encode(held).latent_dist.mean).sample.clamp(-1, 1), held)))
    log(f"decoder stage: start PSNR {psnr0:.2f} dB")
    dec = [vae.decoder, vae.post_quant_conv]
    params = [p for m in dec for p in m.parameters()]
    for m in dec:
        m.train().requires_grad_(True)
    ema = copy.deepcopy(vae).eval().requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    step, smooth, t0, last = 0, None, time.time(), time.time()
    while time.time() - t0 < minutes * 60:
        frac = (time.time() - t0) / (minutes * 60)
        for pg in opt.param_groups:
            pg["lr"] = lr * min(1.0, (step + 1) / 50) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        xb = x[torch.randint(0, len(x) - 64, (batch,), generator=g)]
        i, j = (torch.randint(0, (64 - crop) // 4 + 1, (2,), generator=g) * 4).tolist()
        xb = xb[:, :, i : i + crop, j : j + crop]
        with torch.no_grad():
            zb = vae.encode(xb).latent_dist.sample(generator=g)
        loss = F.mse_loss(vae.decode(zb).sample, xb)
        smooth = _step(opt, loss, params, ema, vae, step, smooth, loss.item())
        step += 1
        if step % 50 == 0:
            log(f"decoder step {step} mse {smooth:.5f}")
        if time.time() - last > 600:
            save(ema, out / "vae.safetensors")
            last = time.time()
    with torch.no_grad():
        psnr = float(10 * torch.log10(4.0 / F.mse_loss(ema.decode(ema.encode(held).latent_dist.mean).sample.clamp(-1, 1), held)))
    save(ema, out / "vae.safetensors")
    stats = dict(steps=step, batch=batch, crop=crop, lr=lr, psnr_before_db=round(psnr0, 2), psnr_db=round(psnr, 2),
                 seconds=round(time.time() - t0), command="python -m etcdiff.scenes.train --stage decoder")
    (out / "vae_decoder.json").write_text(json.dumps(stats, indent=2))
    log(f"decoder stage done: {step} steps, PSNR {psnr0:.2f} -> {psnr:.2f} dB")
    return stats


def train(out: Path = WEIGHTS_DIR, seed: int = 0, minutes: float = 60.0, vae_minutes: float = 12.0,
          steps: int | None = None, pool: int = 6000, batch: int = 24, lr: float = 1e-3, p_uncond: float = 0.1,
          ema_decay: float = 0.999, ckpt_minutes: float = 10.0, threads: int = 1, device: str = "cpu",
          vae_batch: int = 16, vae_lr: float = 2e-3, vae_crop: int = 32, vae_from: Path | None = None,
          p_unshifted: float = 0.5) -> dict:
    """Train everything and write weights + ``recipe.json`` to ``out``; returns the recipe.

    ``vae_from``: a folder whose ``vae.safetensors`` (and ``recipe.json``'s VAE record) is reused instead of stage 2.
    ``p_unshifted``: the share of training noise levels drawn from the plain logit-normal instead of the shifted one
    the sampler uses, so the middle noise levels, where shapes form, get their share of training.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    scenes, x = make_pool(pool, seed)
    log(f"pool: {len(scenes)} scenes rendered")
    if vae_from is not None:
        vae, vae_stats = load_vae(Path(vae_from), device)
    else:
        vae, vae_stats = train_vae(x, vae_minutes, g, batch=vae_batch, lr=vae_lr, crop=vae_crop, device=device)
    raw = torch.cat([encode_mean(vae, x[i : i + 1024].to(device)).cpu() for i in range(0, len(x), 1024)])
    scale, shift = set_latent_stats(vae, raw)
    z = (raw - shift) * scale
    latents = FluxPipeline._pack_latents(z, len(z), 4, 16, 16).to(device)  # [N, 64, 16]
    save(vae, out / "vae.safetensors")
    log(f"latents encoded: scale {scale:.4f} shift {shift:.4f}; vae saved")
    del x, raw, z

    text, model = build_text_encoder().to(device).train(), build_transformer().to(device).train()
    params = list(text.parameters()) + list(model.parameters())
    ema_text = copy.deepcopy(text).eval().requires_grad_(False)
    ema_model = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    tok = text.tokenizer()
    img_ids = FluxPipeline._prepare_latent_image_ids(batch, 8, 8, device, torch.float32)
    txt_ids = tok.positions(device)
    rng = random.Random(seed + 1)
    s_shift = sampling_shift()
    recipe: dict = dict(
        seed=seed, pool=pool, batch=batch, lr=lr, p_uncond=p_uncond, p_unshifted=p_unshifted, ema_decay=ema_decay, timestep_shift=s_shift,
        vae_config=VAE_CONFIG, text_config=TEXT_CONFIG, transformer_config=TRANSFORMER_CONFIG,
        scheduler_config=SCHEDULER_CONFIG, vae=dict(scaling_factor=scale, shift_factor=shift, **vae_stats),
        torch_threads=torch.get_num_threads(), device=str(device), command="python -m etcdiff.scenes.train",
    )
    budget = minutes * 60 - (time.time() - T0) - 60  # leave a minute for the last save
    total, warmup, t_start, last_ckpt, smooth, step = steps, 200, time.time(), time.time(), None, 0

    def checkpoint(final: bool) -> None:
        save(ema_text, out / "text_encoder.safetensors")
        save(ema_model, out / "transformer.safetensors")
        recipe.update(steps=step, schedule="steps" if total else "time", final_loss=round(smooth or 0.0, 5), partial=not final,
                      denoiser_seconds=round(time.time() - t_start), total_seconds=round(time.time() - T0))
        (out / "recipe.json").write_text(json.dumps(recipe, indent=2))
        log(f"checkpoint at step {step} ({'final' if final else 'partial'})")

    while True:  # --steps: step-based schedule; otherwise the schedule runs on the fraction of the time budget
        frac = step / total if total else (time.time() - t_start) / budget
        if frac >= 1.0:
            break
        for pg in opt.param_groups:
            pg["lr"] = lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        idx = torch.randint(0, len(latents), (batch,), generator=g).tolist()
        caps = []
        for i in idx:
            objs = list(scenes[i].objects)
            rng.shuffle(objs)
            caps.append("" if rng.random() < p_uncond else caption(objs))
        ids, pad = (t.to(device) for t in tok(caps))
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=g).to(device)
        u = torch.sigmoid(torch.randn(batch, generator=g)).to(device)
        shifted = (torch.rand(batch, generator=g) >= p_unshifted).to(device)
        s = torch.where(shifted, s_shift * u / (1 + (s_shift - 1) * u), u)
        xs = (1 - s[:, None, None]) * x0 + s[:, None, None] * noise
        emb, pooled = text(ids, pad)
        pred = model(hidden_states=xs, timestep=s, pooled_projections=pooled, encoder_hidden_states=emb,
                     txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        loss = F.mse_loss(pred, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = min(ema_decay, (1 + step) / (10 + step))
        ema_update(ema_text, text, d)
        ema_update(ema_model, model, d)
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        step += 1
        if step % 50 == 0:
            log(f"step {step} ({100 * frac:.1f} % of schedule) loss {smooth:.4f} lr {opt.param_groups[0]['lr']:.2e}")
        if time.time() - last_ckpt > ckpt_minutes * 60:
            checkpoint(final=False)
            last_ckpt = time.time()
    checkpoint(final=True)
    return recipe


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the scenes latent FLUX (VAE, text encoder, transformer) on CPU.")
    p.add_argument("--stage", choices=("all", "decoder"), default="all",
                   help="all: VAE, then text encoder + transformer; decoder: fine-tune only the VAE decoder in --out")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=60.0, help="total wall-clock budget")
    p.add_argument("--vae-minutes", type=float, default=12.0)
    p.add_argument("--steps", type=int, default=None, help="denoiser steps, step-based schedule (default: follow the time budget)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 measured 5-10x faster than 2 on the shared, oversubscribed 2-core box")
    p.add_argument("--pool", type=int, default=6000, help="number of rendered training scenes")
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ckpt-minutes", type=float, default=10.0)
    p.add_argument("--device", default="cpu", help="cpu (the recipe) or cuda where a GPU is at hand")
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--vae-crop", type=int, default=32, help="VAE training crop (the VAE is convolutional)")
    p.add_argument("--vae-from", type=Path, default=None,
                   help="reuse the VAE in this folder (skips the VAE stage; its encoder fixes the latent space)")
    p.add_argument("--p-unshifted", type=float, default=0.5,
                   help="share of training noise levels drawn unshifted (the rest use the sampler's shift)")
    a = p.parse_args(argv)
    if a.stage == "decoder":
        finetune_decoder(out=a.out, seed=a.seed, minutes=a.minutes, pool=a.pool, batch=a.vae_batch, lr=a.vae_lr / 2,
                         threads=a.threads)
        return
    train(out=a.out, seed=a.seed, minutes=a.minutes, vae_minutes=a.vae_minutes, steps=a.steps, pool=a.pool,
          batch=a.batch, lr=a.lr, ckpt_minutes=a.ckpt_minutes, threads=a.threads, device=a.device,
          vae_batch=a.vae_batch, vae_lr=a.vae_lr, vae_crop=a.vae_crop, vae_from=a.vae_from,
          p_unshifted=a.p_unshifted)


if __name__ == "__main__":
    main()
