"""Fast tests of the embedded digits demo model and its pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image

from etcdiff.digits import DigitsPipeline, load_transformer
from etcdiff.digits.model import NULL_CLASS, SAMPLE_SIZE, WEIGHTS_PATH

STEPS = 4


@pytest.fixture(scope="module")
def pipe() -> DigitsPipeline:
    p = DigitsPipeline.from_embedded("cpu")
    p.set_progress_bar_config(disable=True)
    return p


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def test_weights_file_small() -> None:
    assert WEIGHTS_PATH.is_file()
    assert WEIGHTS_PATH.stat().st_size < 10 * 1024 * 1024


def test_loaded_model_is_eval_and_has_null_class() -> None:
    m = load_transformer()
    assert not m.training  # in train mode DiT's LabelEmbedding would randomly drop labels
    table = m.transformer_blocks[0].norm1.emb.class_embedder.embedding_table
    assert table.num_embeddings == NULL_CLASS + 1


def test_missing_weights_message(tmp_path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_transformer(path=missing)


@pytest.mark.parametrize("guidance_scale", [1.0, 2.0])
def test_output_types(pipe: DigitsPipeline, guidance_scale: float) -> None:
    kw = dict(num_inference_steps=STEPS, guidance_scale=guidance_scale, generator=_gen())
    pt = pipe(["3", 7], output_type="pt", **kw).images
    assert pt.shape == (2, 1, SAMPLE_SIZE, SAMPLE_SIZE) and pt.dtype == torch.float32
    assert pt.min() >= 0 and pt.max() <= 1

    lat = pipe(["3", 7], output_type="latent", generator=_gen(), **{k: v for k, v in kw.items() if k != "generator"})
    assert lat.images.shape == (2, 1, SAMPLE_SIZE, SAMPLE_SIZE)
    assert torch.allclose(pipe.decode(lat.images), pt)

    (arr,) = pipe("5", output_type="np", return_dict=False, **{**kw, "generator": _gen()})
    assert isinstance(arr, np.ndarray) and arr.shape == (1, SAMPLE_SIZE, SAMPLE_SIZE, 1) and arr.dtype == np.float32
    assert 0 <= arr.min() and arr.max() <= 1

    out = pipe([0, 1, 2], output_type="pil", **{**kw, "generator": _gen()})
    assert isinstance(out, ImagePipelineOutput) and len(out.images) == 3
    assert all(isinstance(im, Image.Image) and im.size == (64, 64) for im in out.images)
    assert pipe.num_timesteps == STEPS and pipe.guidance_scale == guidance_scale


def test_same_seed_is_deterministic(pipe: DigitsPipeline) -> None:
    a = pipe(["4", "9"], num_inference_steps=STEPS, generator=_gen(1), output_type="pt").images
    b = pipe(["4", "9"], num_inference_steps=STEPS, generator=_gen(1), output_type="pt").images
    c = pipe(["4", "9"], num_inference_steps=STEPS, generator=_gen(2), output_type="pt").images
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_explicit_latents(pipe: DigitsPipeline) -> None:
    z = torch.randn(1, 1, SAMPLE_SIZE, SAMPLE_SIZE, generator=_gen(3))
    a = pipe("8", num_inference_steps=STEPS, latents=z, output_type="pt").images
    b = pipe("8", num_inference_steps=STEPS, latents=z.clone(), output_type="pt").images
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="shape"):
        pipe("8", num_inference_steps=STEPS, latents=torch.randn(1, 1, 8, 8))


@pytest.mark.parametrize("bad", ["cat", "10", 10, -1, "", [], ["1", "x"], 3.0, True, None])
def test_bad_prompt(pipe: DigitsPipeline, bad) -> None:
    with pytest.raises(ValueError, match="'0'..'9'"):
        pipe(bad, num_inference_steps=STEPS)


def test_bad_output_type(pipe: DigitsPipeline) -> None:
    with pytest.raises(ValueError, match="output_type"):
        pipe("1", num_inference_steps=STEPS, output_type="jpeg")
