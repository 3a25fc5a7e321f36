"""The scenes text-to-image model: grammar, renderer, text encoder, FluxPipeline subclass, adherence, methods."""

import random

import numpy as np
import pytest
import torch

import etcdiff
from etcdiff.scenes.adherence import read_objects, score, score_many
from etcdiff.scenes.grammar import (
    COLORS, SHAPES, SceneObject, caption, parse_prompt, sample_prompts, sample_scene, scene_from_prompt,
)
from etcdiff.scenes.model import build_transformer
from etcdiff.scenes.pipeline import ScenesPipeline, build_scheduler
from etcdiff.scenes.render import render, render_uint8
from etcdiff.scenes.text_encoder import CELLS_LENGTH, TOKENS, ScenesTextEncoder, ScenesTokenizer
from etcdiff.scenes.vae import build_vae

PROMPT = "a large red circle at the top left and a small blue square in the center"


def test_parse_the_issue_example_exactly():
    assert parse_prompt(PROMPT) == [
        SceneObject("large", "red", "circle", (0, 0)), SceneObject("small", "blue", "square", (1, 1)),
    ]
    assert parse_prompt("a small green ring at the right") == [SceneObject("small", "green", "ring", (1, 2))]
    assert parse_prompt("a small white cross at the bottom")[0].cell == (2, 1)
    assert parse_prompt("a large cyan triangle at the bottom right")[0].cell == (2, 2)


def test_caption_parse_round_trip_on_sampled_scenes():
    rng = random.Random(0)
    for _ in range(200):
        scene = sample_scene(rng)
        assert 1 <= len(scene.objects) <= 3
        assert len({o.cell for o in scene.objects}) == len(scene.objects)
        assert tuple(parse_prompt(scene.caption)) == scene.objects
        assert caption(parse_prompt(scene.caption)) == scene.caption


@pytest.mark.parametrize("prompt, match", [
    ("a huge red circle in the center", r"unknown word 'huge'.*SIZE in \['small', 'large'\]"),
    ("a small pink circle in the center", r"unknown word 'pink'.*COLOR in \['red'"),
    ("a small red circle", r"expected a position \(WHERE\)"),
    ("a red circle in the center", r"expected SIZE but got 'red'"),
    ("a small red circle at the top and a small blue ring at the top", r"same cell 'at the top'"),
    ("a small red circle in the center and", r"expected 'a' but got '<end of prompt>'"),
    ("a small red circle in the center a small red ring at the left", r"expected 'and'"),
    ("", r"empty prompt"),
    ("a small red circle at the top left and a small red circle at the top and a small red circle at the right "
     "and a small red circle in the center", r"too many objects"),
])
def test_prompts_outside_the_grammar_name_the_problem_and_the_vocabulary(prompt, match):
    with pytest.raises(ValueError, match=match) as err:
        parse_prompt(prompt)
    assert "SHAPE in ['circle', 'square', 'triangle', 'ring', 'cross']" in str(err.value)


def test_sampled_prompts_are_seeded():
    assert sample_prompts(5, seed=3) == sample_prompts(5, seed=3)
    assert sample_prompts(5, seed=3) != sample_prompts(5, seed=4)


def test_render_draws_the_right_colour_at_the_cell_centre_and_leaves_other_cells_empty():
    scene = scene_from_prompt("a large yellow square in the center")
    img = render(scene)
    assert img.shape == (64, 64, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img[32, 32], [0.96, 0.90, 0.12], atol=1e-6)  # centre of cell (1, 1)
    np.testing.assert_allclose(img[10, 10], [0.15, 0.15, 0.17], atol=1e-6)  # empty top-left cell: background
    ring = render(scene_from_prompt("a large white ring in the center"))
    assert ring[32, 32].max() < 0.2 and ring[32, 32 + 7].min() > 0.9  # hole in the middle, band at r = 7


def test_tokenizer_lays_the_words_out_by_cell_with_a_leading_cls_and_accepts_the_empty_caption():
    tok = ScenesTokenizer()
    ids, pad = tok(["a small red circle in the center and a large blue ring at the top left", ""])
    assert ids.shape == (2, CELLS_LENGTH) == (2, 28) and pad.shape == (2, CELLS_LENGTH)
    words = [TOKENS[i] for i in ids[0]]
    assert words[0] == "<cls>" and words[1:4] == ["large", "blue", "ring"]  # cell (0, 0)
    assert words[13:16] == ["small", "red", "circle"]  # cell (1, 1), slots 1 + 3 * 4
    assert sum(not p for p in pad[0].tolist()) == 7
    assert pad[1].tolist() == [False] + [True] * (CELLS_LENGTH - 1)
    pos = tok.positions()
    assert pos.shape == (CELLS_LENGTH, 3) and pos[0].tolist() == [0.0, 3.5, 3.5]
    assert pos[13:16, 1:].tolist() == [[3.5, 3.5]] * 3 and pos[1, 1:].tolist() == pytest.approx([0.8333, 0.8333], abs=1e-4)
    with pytest.raises(ValueError, match="unknown word 'dog'"):
        tok("a small red dog in the center")


def test_the_words_layout_keeps_the_prompt_order_at_position_zero():
    tok = ScenesTokenizer("words")
    ids, pad = tok(["a small red circle in the center", ""])
    assert ids.shape == (2, 32)
    assert [TOKENS[i] for i in ids[0, :9]] == ["<cls>", "a", "small", "red", "circle", "in", "the", "center", "<pad>"]
    assert pad[0].tolist() == [False] * 8 + [True] * 24 and not tok.positions().any()
    with pytest.raises(ValueError, match="unknown token layout 'rows'"):
        ScenesTokenizer("rows")


def test_text_encoder_gives_per_token_embeddings_and_a_pooled_vector():
    enc = ScenesTextEncoder(dim=32, num_layers=1, num_heads=2).eval()
    ids, pad = enc.tokenizer()([PROMPT, "a small red circle in the center"])
    tokens, pooled = enc(ids, pad)
    assert tokens.shape == (2, CELLS_LENGTH, 32) and pooled.shape == (2, 32)
    torch.testing.assert_close(pooled, tokens[:, 0])
    assert not torch.isnan(enc(*ScenesTokenizer()([""]))[0]).any()  # the all-padding empty caption is fine


def tiny_pipeline() -> ScenesPipeline:
    """Random, tiny components of the scenes architecture (fast, no weights needed)."""
    torch.manual_seed(0)
    transformer = build_transformer(dict(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=False, axes_dims_rope=(4, 6, 6)))
    pipe = ScenesPipeline(scheduler=build_scheduler(), vae=build_vae(), text_encoder=ScenesTextEncoder(32, 1, 2),
                          tokenizer=ScenesTokenizer(), transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pipeline_samples_64px_images_through_fluxpipeline_with_true_cfg_and_flux_shift():
    pipe = tiny_pipeline()
    calls = []
    txt_ids = []

    def seen(module, args, kwargs):
        calls.append(kwargs["encoder_hidden_states"].shape)
        txt_ids.append(kwargs["txt_ids"])

    pipe.transformer.register_forward_pre_hook(seen, with_kwargs=True)
    out = pipe([PROMPT, "a small green ring at the right"], num_inference_steps=2, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 64, 64, 3)
    assert len(calls) == 4  # 2 steps x (cond, uncond): true CFG with the empty caption
    for ids in txt_ids:  # each text token sits at its cell's centre in the rotary positions
        torch.testing.assert_close(ids, ScenesTokenizer().positions())
    # FLUX's shift at full resolution: mu = 1.15 at our 64 image tokens, sigma' = e^mu s / (1 + (e^mu - 1) s)
    s, shift = 0.5, np.exp(1.15)
    assert float(pipe.scheduler.sigmas[1]) == pytest.approx(shift * s / (1 + (shift - 1) * s), rel=1e-5)
    calls.clear()
    pipe(PROMPT, num_inference_steps=2, guidance_scale=1.0, output_type="latent")
    assert len(calls) == 2  # guidance_scale 1: one branch only


def test_pipeline_rejects_prompts_outside_the_grammar():
    with pytest.raises(ValueError, match="unknown word 'cat'"):
        tiny_pipeline()("a small red cat in the center", num_inference_steps=2)


def test_shipped_weights_load_and_sample_two_steps():
    pipe = ScenesPipeline.from_embedded()
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a small green ring at the right", num_inference_steps=2, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 64, 64, 3) and np.isfinite(out.images).all()
    with pytest.raises(FileNotFoundError, match="python -m etcdiff.scenes.train"):
        ScenesPipeline.from_embedded(weights_dir="/nonexistent")


def test_adherence_reads_ground_truth_renders_right():
    rng = random.Random(7)
    scenes = [sample_scene(rng) for _ in range(40)]
    frac, right, total = score_many([render_uint8(s) for s in scenes], [s.caption for s in scenes])
    assert total == sum(len(s.objects) for s in scenes)
    assert frac >= 0.97
    readings = read_objects(render_uint8(scene_from_prompt(PROMPT)), PROMPT)
    assert [(r.color, r.shape, r.size) for r in readings] == [("red", "circle", "large"), ("blue", "square", "small")]


def test_adherence_scores_wrong_colour_shape_and_cell_as_wrong():
    img = render_uint8(scene_from_prompt("a large red circle at the top left"))
    assert score(img, "a large red circle at the top left") == 1.0
    assert score(img, "a large blue circle at the top left") == 0.0
    assert score(img, "a large red cross at the top left") == 0.0
    assert score(img, "a large red circle at the bottom right") == 0.0
    assert score(img, "a large red circle at the top left and a small red ring in the center") == 0.5
    assert {c for c in COLORS} == {r.color for c in COLORS
                                   for r in read_objects(render_uint8(scene_from_prompt(f"a large {c} cross at the top")),
                                                         f"a large {c} cross at the top") if r.color == c}
    assert all(read_objects(render_uint8(scene_from_prompt(f"a large white {s} at the left")),
                            f"a large white {s} at the left")[0].shape == s for s in SHAPES)
    with pytest.raises(ValueError, match="64x64 RGB"):
        score(np.zeros((32, 32, 3), np.uint8), "a large red circle at the top left")


def calibrated_settings(pipe, method):
    """A method that needs a saved calibration gets one fitted here, on one prompt at the test's 8 steps."""
    from etcdiff.calibrate import calibrate_method

    extra = {"meancache": {"calls": 4}}.get(method, {})
    return {**calibrate_method(pipe, method, ["a small red circle in the center"], 8, 0, **extra), **extra}


NOT_ON_FLUX = {"diffusers-seacache": "Wan text-to-video", "deepcache": "UNet2DConditionModel"}


@pytest.mark.parametrize("method", list(etcdiff.METHODS))
def test_every_method_runs_on_the_scenes_pipeline(method):
    pipe = tiny_pipeline()
    if method in NOT_ON_FLUX:  # refused in one line naming the methods that run on this FLUX
        with pytest.raises(NotImplementedError, match=rf"{NOT_ON_FLUX[method]}.*Methods that run on it: etc"):
            etcdiff.enable(pipe, method)
        return
    settings = {"etc": dict(threshold=0.05)}.get(method, {})
    if etcdiff.METHODS[method].saved_required:
        settings = calibrated_settings(pipe, method)
    kwargs = dict(num_inference_steps=8, output_type="latent")  # no VAE decode: faster, and exact
    ref = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **kwargs).images
    with pytest.warns(UserWarning) if method == "cache-dit" else _nothing():
        etcdiff.enable(pipe, method, **settings)
    try:
        out = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **kwargs).images
    finally:
        etcdiff.disable(pipe)
    assert out.shape == ref.shape == (1, 64, 16) and torch.isfinite(out).all()  # 8x8 packed tokens of 4x2x2
    if method == "none":
        torch.testing.assert_close(out, ref)
    after = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **kwargs).images
    torch.testing.assert_close(after, ref)  # disable restores the pipeline exactly


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_demo_is_the_scenes_model_and_the_issue_generate_command_works(tmp_path):
    from etcdiff.cli import main
    from etcdiff.models import load_pipeline

    assert isinstance(load_pipeline("demo"), ScenesPipeline)
    out = tmp_path / "ring.png"
    assert main(["generate", "--model", "demo", "--prompt", "a small green ring at the right", "--method", "etc",
                 "--steps", "8", "--out", str(out)]) == 0
    from PIL import Image

    assert Image.open(out).size[1] == 64
