"""The held-out UNet model: a tiny class-conditional epsilon-prediction ``UNet2DConditionModel`` on 16x16 digits.

The Stable Diffusion family's setting at toy size: a UNet with cross-attention predicts the noise ``epsilon``
of ``x_t = sqrt(a_t)·x0 + sqrt(1 - a_t)·epsilon`` under a DDPM linear-beta schedule (1000 steps, beta 1e-4 to
0.02), and is sampled with DDIM or DPM-Solver++. The condition is a digit class read through cross-attention:
:class:`LabelTokens` turns a label into a few learned tokens (the "text encoder"), and the extra label
``NULL_CLASS == 10`` is the unconditional one used by classifier-free guidance. Images are 1x16x16 in [-1, 1]
(scikit-learn's 8x8 digits upsampled bilinearly), so the latent space is pixel space and no VAE is needed.

No etcdiff method was tuned on this model: it exists to test them on an architecture and a solver they were not
designed around.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

NUM_CLASSES = 10
NULL_CLASS = 10  # the extra label row, used as the unconditional label
SAMPLE_SIZE = 16
TOKENS = 4  # label tokens the UNet cross-attends to
EMBED_DIM = 64  # their width (the UNet's cross_attention_dim)
WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "unet_digits.safetensors"

#: the training noise schedule, shared by the training script and both samplers
NOISE_SCHEDULE: dict = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)

UNET_CONFIG: dict = dict(
    sample_size=SAMPLE_SIZE,
    in_channels=1,
    out_channels=1,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=EMBED_DIM,
    attention_head_dim=4,  # diffusers reads this as the number of heads for this UNet class
    norm_num_groups=8,
)


class LabelTokens(ModelMixin, ConfigMixin):
    """A digit label (0-9, or ``NULL_CLASS``) to ``tokens`` learned vectors: the UNet's encoder hidden states."""

    @register_to_config
    def __init__(self, num_labels: int = NUM_CLASSES + 1, tokens: int = TOKENS, dim: int = EMBED_DIM):
        super().__init__()
        self.embedding = torch.nn.Embedding(num_labels, tokens * dim)
        torch.nn.init.normal_(self.embedding.weight, std=0.5)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` [B] to encoder hidden states [B, tokens, dim]."""
        return self.embedding(labels).view(labels.shape[0], self.config.tokens, self.config.dim)


def build_models() -> tuple[UNet2DConditionModel, LabelTokens]:
    """The (randomly initialised) UNet and label encoder with the fixed configs."""
    return UNet2DConditionModel(**UNET_CONFIG), LabelTokens()


def load_models(path: str | Path | None = None) -> tuple[UNet2DConditionModel, LabelTokens]:
    """The UNet and label encoder with the shipped safetensors weights (offline), in eval mode."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else WEIGHTS_PATH
    if not path.is_file():
        raise FileNotFoundError(f"UNet digits weights not found at {path}. They ship with etcdiff; regenerate them "
                                "with `python -m etcdiff.unet_digits.train`.")
    unet, labels = build_models()
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    unet.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("unet.")}, strict=True)
    labels.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("labels.")}, strict=True)
    return unet.eval().requires_grad_(False), labels.eval().requires_grad_(False)
