"""How alike two decoded results look: SSIM of images, mean SSIM over video frames, SSIM of audio log-mel
spectrograms (the similarity of the perturbation test)."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch


def _ssim_2d(a: np.ndarray, b: np.ndarray, data_range: float, channel_axis: int | None) -> float:
    from skimage.metrics import structural_similarity

    spatial = a.shape[:2]
    win = min(7, *spatial)
    win -= 1 - win % 2  # odd
    if win < 3:
        raise ValueError(
            f"decoded images of {spatial[0]}x{spatial[1]} pixels are too small for SSIM (at least 3x3 is needed)."
        )
    return float(structural_similarity(a, b, win_size=win, data_range=data_range, channel_axis=channel_axis))


def _prepare_pixels(x: np.ndarray, value_range: tuple[float, float] | None, quantize: bool,
                    ref: np.ndarray) -> tuple[np.ndarray, float]:
    if value_range is None:  # unknown range: the original's own range, no clamping
        lo, hi = float(ref.min()), float(ref.max())
        return x.astype(np.float64), (hi - lo) or 1.0
    lo, hi = value_range
    x = (np.clip(x, lo, hi) - lo) / (hi - lo)
    if quantize:  # 8-bit, as users see the result (and as the reference measures it)
        return np.round(x * 255.0), 255.0
    return x.astype(np.float64), 1.0


def image_ssim(orig: torch.Tensor, pert: torch.Tensor, *, value_range: tuple[float, float] | None = (0.0, 1.0),
               quantize: bool = True) -> float:
    """SSIM of two images ``[C, H, W]`` (channel-last for skimage; single-channel as 2-D)."""
    o = orig.detach().float().cpu().numpy()
    p = pert.detach().float().cpu().numpy()
    if o.ndim == 2:
        o, p = o[None], p[None]
    if o.ndim != 3:
        raise ValueError(f"an image must be [C, H, W], got shape {tuple(orig.shape)}.")
    o_px, rng = _prepare_pixels(o, value_range, quantize, o)
    p_px, _ = _prepare_pixels(p, value_range, quantize, o)
    if o_px.shape[0] == 1:
        return _ssim_2d(o_px[0], p_px[0], rng, None)
    return _ssim_2d(np.moveaxis(o_px, 0, -1), np.moveaxis(p_px, 0, -1), rng, -1)


def video_ssim(orig: torch.Tensor, pert: torch.Tensor, **kw: Any) -> float:
    """Mean SSIM over the frames of two videos ``[C, F, H, W]``."""
    if orig.ndim != 4:
        raise ValueError(f"a video must be [C, F, H, W], got shape {tuple(orig.shape)}.")
    return float(np.mean([image_ssim(orig[:, f], pert[:, f], **kw) for f in range(orig.shape[1])]))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """Triangular mel filters ``[n_mels, n_fft // 2 + 1]`` on the HTK mel scale (no normalisation)."""
    f_max = f_max or sample_rate / 2

    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    hz = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, center, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - lower) / np.maximum(center - lower, 1e-10)
    down = (upper - freqs[None]) / np.maximum(upper - center, 1e-10)
    return torch.from_numpy(np.clip(np.minimum(up, down), 0.0, None)).float()


def mel_spectrogram(wave: torch.Tensor, sample_rate: int = 16000, n_fft: int = 1024, hop: int | None = None,
                    n_mels: int = 64, top_db: float = 80.0, ref_max: float | None = None) -> torch.Tensor:
    """Log-mel spectrogram in dB ``[n_mels, frames]`` of a mono waveform (channels are averaged), clipped to
    ``top_db`` below ``ref_max`` (default: its own maximum)."""
    w = wave.detach().float().cpu()
    if w.ndim == 2:
        w = w.mean(0)
    if w.ndim != 1:
        raise ValueError(f"a waveform must be [samples] or [channels, samples], got shape {tuple(wave.shape)}.")
    n_fft = min(n_fft, 1 << max(int(math.log2(max(w.numel(), 2))), 1))
    hop = hop or max(n_fft // 4, 1)
    spec = torch.stft(w, n_fft=n_fft, hop_length=hop, window=torch.hann_window(n_fft), return_complex=True).abs() ** 2
    mel = mel_filterbank(sample_rate, n_fft, n_mels) @ spec
    db = 10.0 * torch.log10(mel.clamp_min(1e-10))
    top = float(db.max()) if ref_max is None else ref_max
    return db.clamp(min=top - top_db)


def audio_ssim(orig: torch.Tensor, pert: torch.Tensor, *, sample_rate: int = 16000, **_: Any) -> float:
    """SSIM of the log-mel spectrograms of two waveforms (data range: the original's dB range)."""
    mo = mel_spectrogram(orig, sample_rate)
    mp = mel_spectrogram(pert, sample_rate, ref_max=float(mo.max()))
    rng = float(mo.max() - mo.min()) or 1.0
    return _ssim_2d(mo.numpy().astype(np.float64), mp.numpy().astype(np.float64), rng, None)


def similarity(orig: torch.Tensor, pert: torch.Tensor, modality: str = "image", **kw: Any) -> float:
    """Mean over the batch of the modality's similarity of two decoded batches."""
    fn: Callable[..., float] = {"image": image_ssim, "video": video_ssim, "audio": audio_ssim}[modality]
    if orig.shape != pert.shape:
        raise ValueError(f"decoded shapes differ: {tuple(orig.shape)} vs {tuple(pert.shape)}.")
    if modality == "audio":
        kw = {"sample_rate": kw.get("sample_rate", 16000)}
    else:
        kw.pop("sample_rate", None)
    return float(np.mean([fn(orig[b], pert[b], **kw) for b in range(orig.shape[0])]))

