"""Fidelity of an accelerated run against the full-step reference.

SSIM and PSNR come from :mod:`etcdiff.metrics` (scikit-image). LPIPS and CLIP score need pretrained weights:
they are used only when the weights are already on this machine (checked without any network access) and are
otherwise reported as ``"not available"`` with the reason, never estimated. On the embedded demo model the
agreement of a small digit classifier (:mod:`etcdiff.bench.classifier`) between the reference and the
accelerated image stands in for CLIP score.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..metrics import psnr, ssim, to_hwc

NOT_AVAILABLE = "not available"
#: torchvision's ImageNet AlexNet checkpoint, the backbone of ``lpips.LPIPS(net="alex")``.
ALEXNET_CHECKPOINT = "alexnet-owt-7be5be79.pth"
#: CLIP checkpoints looked for in the local Hugging Face cache, in order.
CLIP_MODELS = ("openai/clip-vit-base-patch32", "openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14")


def psnr_ssim(reference: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    """Mean SSIM and PSNR over a batch (PSNR ``inf`` for identical images)."""
    s, p = ssim(reference, other), psnr(reference, other)
    return {"ssim": float(np.mean(s)), "psnr": float(np.mean(p)), "identical": bool(np.all(np.isinf(p)))}


def relative_l2(reference: torch.Tensor | None, other: torch.Tensor | None) -> float | None:
    """``||other - reference|| / ||reference||`` of the final latents, or ``None`` if either is missing."""
    if reference is None or other is None or reference.shape != other.shape:
        return None
    ref, oth = reference.double().flatten(), other.double().flatten()
    return float((oth - ref).norm() / ref.norm().clamp_min(1e-12))


# -- LPIPS ---------------------------------------------------------------------------------------------------
def lpips_status() -> tuple[bool, str]:
    """Whether LPIPS can run offline: the ``lpips`` package, its linear weights and torchvision's AlexNet."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.origin:
        return False, f"{NOT_AVAILABLE}: the `lpips` package is not installed"
    lin = Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth"
    if not lin.is_file():
        return False, f"{NOT_AVAILABLE}: lpips' linear weights are missing ({lin})"
    if importlib.util.find_spec("torchvision") is None:
        return False, f"{NOT_AVAILABLE}: torchvision is not installed"
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_CHECKPOINT
    if not backbone.is_file():
        return False, f"{NOT_AVAILABLE}: the AlexNet weights are not in the local torch hub cache ({backbone})"
    return True, "lpips (AlexNet, v0.1), local weights"


class LPIPSScorer:
    """LPIPS (AlexNet) on images in [0, 1]; images smaller than 64 px are upsampled (bilinear) to 64 px."""

    def __init__(self, device: str = "cpu") -> None:
        import lpips  # noqa: PLC0415 - optional, only with local weights

        self.device = device
        self.net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()

    @torch.no_grad()
    def __call__(self, reference: np.ndarray, other: np.ndarray) -> float:
        def prep(a: np.ndarray) -> torch.Tensor:
            x = torch.from_numpy(to_hwc(a).transpose(0, 3, 1, 2)).float()
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            if min(x.shape[-2:]) < 64:
                scale = 64 / min(x.shape[-2:])
                x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
            return (x * 2 - 1).to(self.device)

        return float(self.net(prep(reference), prep(other)).mean())


# -- CLIP score ------------------------------------------------------------------------------------------------
def _cached_clip() -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for repo in CLIP_MODELS:
        found = [try_to_load_from_cache(repo, f) for f in ("config.json", "model.safetensors")]
        if all(isinstance(f, str) and os.path.isfile(f) for f in found):
            return repo
    return None


def clip_status() -> tuple[bool, str]:
    """Whether a CLIP model is in the local Hugging Face cache (``transformers``), without network access."""
    if importlib.util.find_spec("transformers") is None:
        return False, f"{NOT_AVAILABLE}: transformers is not installed"
    repo = _cached_clip()
    if repo is None:
        return False, f"{NOT_AVAILABLE}: no CLIP weights in the local Hugging Face cache ({', '.join(CLIP_MODELS)})"
    return True, f"{repo} (local cache)"


class CLIPScorer:
    """CLIP score ``100 * max(cos(image, text), 0)`` (as torchmetrics) with a locally cached CLIP."""

    def __init__(self, device: str = "cpu") -> None:
        from transformers import CLIPModel, CLIPProcessor

        repo = _cached_clip()
        if repo is None:
            raise RuntimeError("no CLIP weights in the local Hugging Face cache")
        self.device = device
        self.model = CLIPModel.from_pretrained(repo, local_files_only=True).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(repo, local_files_only=True)

    @torch.no_grad()
    def __call__(self, images: np.ndarray, prompt: str) -> float:
        arr = (np.clip(to_hwc(images), 0, 1) * 255).round().astype(np.uint8)
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        inputs = self.processor(text=[prompt] * len(arr), images=list(arr), return_tensors="pt", padding=True).to(self.device)
        out = self.model(**inputs)
        img = torch.nn.functional.normalize(out.image_embeds, dim=-1)
        txt = torch.nn.functional.normalize(out.text_embeds, dim=-1)
        return float((100 * (img * txt).sum(-1).clamp_min(0)).mean())


# -- all of them ------------------------------------------------------------------------------------------------
class FidelityScorer:
    """Everything the bench measures against the reference, with the availability of each metric.

    ``digits=True`` (the demo model) loads the shipped digit classifier; CLIP score is then not attempted
    (a digit label is no caption). ``status`` maps each metric to ``"available ..."`` or ``"not available: why"``.
    """

    def __init__(self, digits: bool, device: str = "cpu", adherence: Any = None) -> None:
        self.status: dict[str, str] = {"ssim": "available (scikit-image)", "psnr": "available (scikit-image)"}
        self.lpips: LPIPSScorer | None = None
        self.clip: CLIPScorer | None = None
        self.classifier = None
        self.adherence: Any = None
        ok, why = lpips_status()
        if ok:
            try:
                self.lpips = LPIPSScorer(device)
            except Exception as e:  # weights present but unusable: say so rather than fail the sweep
                ok, why = False, f"{NOT_AVAILABLE}: lpips failed to load offline ({type(e).__name__}: {e})"
        self.status["lpips"] = ("available: " + why) if ok else why
        if digits:
            self.status["clip_score"] = f"{NOT_AVAILABLE}: demo digits model (classifier agreement stands in)"
            from .classifier import classifier_metadata, load_classifier

            self.classifier = load_classifier()
            if self.classifier is None:
                self.status["classifier"] = f"{NOT_AVAILABLE}: weights missing (run python -m etcdiff.bench.train_classifier)"
            else:
                acc = classifier_metadata().get("test_accuracy", "?")
                self.status["classifier"] = f"available: shipped digit CNN, test accuracy {acc}"
        elif adherence is not None:  # a model that reads its own prompts back from an image (the scenes model)
            self.adherence = adherence
            self.status["classifier"] = ("available: the model's prompt-adherence check (each requested object's "
                                         "colour, shape and cell), reported as prompt match")
        else:
            self.status["classifier"] = f"{NOT_AVAILABLE}: only for the embedded models"
            ok, why = clip_status()
            if ok:
                try:
                    self.clip = CLIPScorer(device)
                except Exception as e:
                    ok, why = False, f"{NOT_AVAILABLE}: CLIP failed to load offline ({type(e).__name__}: {e})"
            self.status["clip_score"] = ("available: " + why) if ok else why

    def labels(self, images: np.ndarray) -> list[int] | None:
        return None if self.classifier is None else [int(v) for v in self.classifier.predict(images)]

    def score(self, reference: dict[str, Any], images: np.ndarray, latents: torch.Tensor | None, prompt: str) -> dict[str, Any]:
        """Metrics of ``images`` against ``reference`` (a dict with ``images``, ``latents``, ``labels``)."""
        out = psnr_ssim(reference["images"], images)
        out["latent_rel_l2"] = relative_l2(reference.get("latents"), latents)
        out["lpips"] = self.lpips(reference["images"], images) if self.lpips is not None else None
        out["clip_score"] = self.clip(images, prompt) if self.clip is not None else None
        labels = self.labels(images)
        ref_labels = reference.get("labels")
        out["classifier_label"] = labels
        out["ref_classifier_label"] = ref_labels
        if labels is not None and ref_labels is not None:
            out["classifier_agreement"] = float(np.mean([a == b for a, b in zip(labels, ref_labels)]))
            target = _digit(prompt)
            out["classifier_prompt_match"] = None if target is None else float(np.mean([a == target for a in labels]))
        else:
            out["classifier_agreement"] = out["classifier_prompt_match"] = None
        if self.adherence is not None:
            out["classifier_prompt_match"] = float(np.mean([self.adherence(im, prompt) for im in images]))
        return out


def _digit(prompt: str) -> int | None:
    p = str(prompt).strip()
    return int(p) if len(p) == 1 and p.isdigit() else None
