"""T2VVideoToVideo against diffusers' VideoToVideoSDPipeline, and its refusals."""

from __future__ import annotations

import logging

import pytest
import torch
from reference_pipelines import frames_of, generator, video2video_pipeline

from comfyui_text2video.errors import NodeInputError
from comfyui_text2video.nodes.conditioning import T2VTextEncode
from comfyui_text2video.nodes.vae import T2VVAEDecode
from comfyui_text2video.nodes.video2video import T2VVideoToVideo

PROMPT, NEGATIVE = "a lighthouse in a storm", "blurry"


def refine(handles, frames, *, strength, sampler="ddim", seed=3, steps=5, cfg=7.5, **options):
    model, clip, vae = handles
    encode = T2VTextEncode().encode
    latent = T2VVideoToVideo().refine(model, encode(clip, PROMPT)[0], encode(clip, NEGATIVE)[0], vae, frames, seed,
                                      steps, cfg, sampler, "normal", strength, **options)[0]
    return latent


def reference(handles, frames, *, strength, sampler="ddim", seed=3, steps=5, cfg=7.5):
    pipe = video2video_pipeline(*handles, sampler)
    video = frames.permute(0, 3, 1, 2).unsqueeze(0)  # [B, F, C, H, W] in 0..1
    return frames_of(pipe(PROMPT, video=video, strength=strength, negative_prompt=NEGATIVE, num_inference_steps=steps,
                          guidance_scale=cfg, generator=generator(seed), output_type="pt").frames)


@pytest.mark.parametrize("sampler, strength, frame_count, frames_per_batch", [
    ("ddim", 0.3, 5, 2),
    ("ddim", 0.8, 5, 0),
    ("dpmpp_2m", 0.3, 4, 3),
    ("dpmpp_2m", 0.8, 4, 8),
    ("euler_ancestral", 0.8, 1, 8),  # a single frame
])
def test_matches_reference(tiny_t2v, sampler, strength, frame_count, frames_per_batch):
    frames = torch.rand(frame_count, 48, 64, 3, generator=generator(frame_count))
    latent = refine(tiny_t2v, frames, strength=strength, sampler=sampler, frames_per_batch=frames_per_batch)
    ours = T2VVAEDecode().decode(tiny_t2v[2], latent)[0]
    assert ours.shape == frames.shape
    assert (ours - reference(tiny_t2v, frames, strength=strength, sampler=sampler)).abs().max() < 1e-3


def test_strength_zero_returns_the_encoded_input(tiny_t2v):
    _model, _clip, vae = tiny_t2v
    frames = torch.rand(3, 32, 32, 3, generator=generator(0))
    latent = refine(tiny_t2v, frames, strength=0.0, seed=9)["samples"]
    with torch.no_grad():
        posterior = vae.vae.encode(frames.permute(0, 3, 1, 2) * 2 - 1).latent_dist
    expected = posterior.sample(generator(9))  # raw, as core LATENTs are
    assert latent.shape == (1, 4, 3, 4, 4)
    assert (latent[0].permute(1, 0, 2, 3) - expected).abs().max() < 1e-5


def test_sizes_off_the_grid_are_resized_with_a_warning(tiny_t2v, caplog):
    frames = torch.rand(2, 60, 60, 3, generator=generator(0))
    with caplog.at_level(logging.WARNING):
        latent = refine(tiny_t2v, frames, strength=0.5, steps=2)["samples"]
    assert latent.shape[-2:] == (8, 8)  # 60 -> 64 pixels, not cropped to 56
    assert "not a multiple of 8" in caplog.text


def test_width_and_height_resize_first(tiny_t2v):
    frames = torch.rand(2, 32, 32, 3, generator=generator(0))
    latent = refine(tiny_t2v, frames, strength=0.5, steps=2, width=64, height=48)["samples"]
    assert latent.shape == (1, 4, 2, 6, 8)


@pytest.mark.parametrize("images, message", [
    (torch.zeros(0, 32, 32, 3), "the video has no frames"),
    (torch.zeros(2, 32, 32), r"expected IMAGE frames \[N, H, W, 3\]"),
    ([torch.zeros(32, 32, 3), torch.zeros(16, 16, 3)], "expected IMAGE frames"),
])
def test_bad_images_are_refused(tiny_t2v, images, message):
    with pytest.raises(NodeInputError, match=rf"T2VVideoToVideo: input 'images': {message}"):
        refine(tiny_t2v, images, strength=0.5)


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_strength_outside_range_is_refused(tiny_t2v, strength):
    with pytest.raises(NodeInputError, match=r"T2VVideoToVideo: input 'strength': value .* is (smaller than min 0.0|bigger than max 1.0)"):
        refine(tiny_t2v, torch.rand(2, 32, 32, 3), strength=strength)


def test_hundreds_of_frames_work(tiny_t2v):
    frames = torch.rand(240, 16, 16, 3, generator=generator(0))
    latent = refine(tiny_t2v, frames, strength=0.5, steps=2, frames_per_batch=64)["samples"]
    assert latent.shape == (1, 4, 240, 2, 2)
    assert torch.isfinite(latent).all()


@pytest.mark.parametrize("width, height, latent_size", [
    (96, 0, (6, 12)),  # 48x24 frames at width 96: height 48
    (0, 48, (6, 12)),  # at height 48: width 96
    (0, 40, (5, 10)),  # at height 40: width 80
    (32, 0, (2, 4)),  # at width 32: height 16
])
def test_one_side_zero_keeps_the_aspect_ratio(tiny_t2v, width, height, latent_size):
    frames = torch.rand(1, 24, 48, 3, generator=generator(0))  # landscape 2:1
    latent = refine(tiny_t2v, frames, strength=0.5, steps=1, width=width, height=height)["samples"]
    assert latent.shape[-2:] == latent_size


def test_frames_of_the_target_size_pass_through_untouched():
    from comfyui_text2video.samplers.video2video import resize_frames

    frames = torch.rand(2, 24, 40, 3)
    assert resize_frames(frames, 40, 24) is frames


def test_a_downscaled_fine_pattern_averages_out_instead_of_aliasing():
    """Antialiased resizing: a one-pixel checkerboard at a third of its size is an even grey, not the pixels that
    happen to sit where the new ones are sampled (all black or all white)."""
    from comfyui_text2video.samplers.video2video import resize_frames

    rows, columns = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    checkerboard = ((rows + columns) % 2).float().view(1, 48, 48, 1).expand(1, 48, 48, 3)
    third = resize_frames(checkerboard, 16, 16)
    assert third.shape == (1, 16, 16, 3)
    assert (third - 0.5).abs().max() < 0.05


def test_upscaled_hard_edges_stay_within_0_and_1():
    """Bicubic overshoots at a black/white edge; the frames stay valid pixel values and keep both extremes."""
    from comfyui_text2video.samplers.video2video import resize_frames

    edge = torch.zeros(1, 8, 8, 3)
    edge[:, :, 4:] = 1.0
    upscaled = resize_frames(edge, 32, 32)
    assert upscaled.min() == 0.0 and upscaled.max() == 1.0


def test_video_to_video_ticks_the_progress_bar_each_step_and_stops_when_interrupted(tiny_t2v, progress_ticks):
    progress_ticks.cancel_at = 2  # the user presses Cancel during the second step
    frames = torch.rand(3, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(KeyboardInterrupt):
        refine(tiny_t2v, frames, strength=0.8, steps=5)
    assert progress_ticks == [(1, 4), (2, 4)]  # strength 0.8 of 5 steps runs 4; nothing ran after the interrupt
