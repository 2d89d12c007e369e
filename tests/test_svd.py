"""Stable Video Diffusion: image -> video through T2VSVDConditioning, T2VSampler and T2VVAEDecode, against
diffusers' StableVideoDiffusionPipeline; and the refusals around it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_pipelines import frames_of, generator
from test_text2video_zero import encode

from comfyui_text2video.errors import NodeInputError
from comfyui_text2video.nodes.conditioning import T2VTextEncode
from comfyui_text2video.nodes.long_video import T2VContextWindows
from comfyui_text2video.nodes.memory import T2VVAETiling
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.svd import T2VSVDConditioning
from comfyui_text2video.nodes.text2video_zero import T2VCrossFrameAttention
from comfyui_text2video.nodes.vae import T2VVAEDecode
from comfyui_text2video.nodes.video2video import T2VVideoToVideo


def photo(height: int, width: int) -> np.ndarray:
    """An 8-bit RGB picture with structure in both directions, as core LoadImage would read it."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([np.sin(x / 5.0), np.cos(y / 7.0), np.sin((x + y) / 9.0)], axis=-1)
    return ((rgb + 1) * 127.5).round().astype(np.uint8)


def as_image(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.astype(np.float32) / 255).unsqueeze(0)


def reference(handles, pixels, *, karras, width, height, frames, steps, cfg, min_cfg, fps, motion, aug, chunk, seed):
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
    from PIL import Image

    model, clip, vae = handles
    scheduler = EulerDiscreteScheduler.from_config(model.scheduler_config, use_karras_sigmas=karras)
    pipe = StableVideoDiffusionPipeline(vae=vae.vae, image_encoder=clip.text_encoder, unet=model.unet,
                                        scheduler=scheduler, feature_extractor=clip.tokenizer)
    pipe.set_progress_bar_config(disable=True)
    video = pipe(Image.fromarray(pixels), height=height, width=width, num_frames=frames, num_inference_steps=steps,
                 min_guidance_scale=min_cfg, max_guidance_scale=cfg, fps=fps, motion_bucket_id=motion,
                 noise_aug_strength=aug, decode_chunk_size=chunk, generator=generator(seed), output_type="pt").frames
    return frames_of(video)


def graph(handles, pixels, *, karras, width, height, frames, steps, cfg, min_cfg, fps, motion, aug, chunk, seed):
    model, clip, vae = handles
    positive, negative, latent = T2VSVDConditioning().encode(clip, vae, as_image(pixels), width, height, frames, fps,
                                                             motion, aug, seed, min_cfg)
    out = T2VSampler().sample(model, positive, negative, latent, seed, steps, cfg, "euler",
                              "karras" if karras else "normal", 1.0)[0]
    return T2VVAEDecode().decode(vae, out, chunk or 0)[0]


@pytest.mark.parametrize("settings", [
    # the checkpoint's schedule (Karras sigmas), the reference's defaults, decoded 2 frames at a time
    dict(karras=True, image=(64, 64), size=(64, 64), frames=3, steps=3, cfg=3.0, min_cfg=1.0, fps=7, motion=127, aug=0.02, chunk=2),
    # plain sigmas, another image size (resized as the reference resizes), a steeper ramp, all frames at once
    dict(karras=False, image=(56, 80), size=(40, 72), frames=4, steps=2, cfg=2.5, min_cfg=1.5, fps=12, motion=40, aug=0.1, chunk=None),
    # no guidance: the negative is never used
    dict(karras=True, image=(48, 64), size=(48, 64), frames=2, steps=2, cfg=1.0, min_cfg=1.0, fps=6, motion=200, aug=0.0, chunk=1),
])
def test_an_image_becomes_the_pipelines_video(tiny_svd, settings):
    settings = dict(settings)
    height, width = settings.pop("size")
    pixels = photo(*settings.pop("image"))
    expected = reference(tiny_svd, pixels, width=width, height=height, seed=11, **settings)
    ours = graph(tiny_svd, pixels, width=width, height=height, seed=11, **settings)
    assert ours.shape == (settings["frames"], height, width, 3)
    assert (ours - expected).abs().max() < 1e-3
    assert ours.std() > 0.01  # a video, not a constant


def svd_inputs(handles, frames=2):
    model, clip, vae = handles
    return T2VSVDConditioning().encode(clip, vae, as_image(photo(32, 32)), 32, 32, frames, 7, 127, 0.02, 0, 1.0)


def test_the_first_frames_guidance_is_min_cfg(tiny_svd):
    """With min_cfg = cfg the ramp is flat; raising min_cfg alone changes the early frames more than the last one."""
    model, _clip, _vae = tiny_svd
    positive, negative, latent = svd_inputs(tiny_svd, frames=3)
    runs = {}
    for min_cfg in (1.0, 3.0):
        pos = [[embeds, {**meta, "t2v_min_cfg": min_cfg}] for embeds, meta in positive]
        runs[min_cfg] = T2VSampler().sample(model, pos, negative, latent, 0, 2, 3.0, "euler", "karras", 1.0)[0]
    change = (runs[1.0]["samples"] - runs[3.0]["samples"]).abs().amax(dim=(0, 1, 3, 4))
    assert change[0] > 0 and change[-1] < change[0] / 10


def test_core_style_conditioning_ramps_the_guidance_up_from_1(tiny_svd):
    """Conditioning with core's keys only (as core SVD_img2vid_Conditioning makes it) samples as min_cfg 1 does."""
    model = tiny_svd[0]
    positive, negative, latent = svd_inputs(tiny_svd, frames=3)  # min_cfg 1
    core = [[[embeds, {k: v for k, v in meta.items() if k != "t2v_min_cfg"}] for embeds, meta in conditioning]
            for conditioning in (positive, negative)]
    ours = T2VSampler().sample(model, positive, negative, latent, 2, 2, 3.0, "euler", "karras", 1.0)[0]
    theirs = T2VSampler().sample(model, *core, latent, 2, 2, 3.0, "euler", "karras", 1.0)[0]
    assert torch.equal(ours["samples"], theirs["samples"])


def test_a_split_run_equals_the_whole_run(tiny_svd):
    model = tiny_svd[0]
    positive, negative, latent = svd_inputs(tiny_svd, frames=3)
    sampler = T2VSampler()
    whole = sampler.sample(model, positive, negative, latent, 4, 4, 3.0, "euler", "karras", 1.0)[0]
    first = sampler.sample(model, positive, negative, latent, 4, 4, 3.0, "euler", "karras", 1.0, end_step=2,
                           return_with_leftover_noise=True)[0]
    rest = sampler.sample(model, positive, negative, first, 4, 4, 3.0, "euler", "karras", 1.0, start_step=2,
                          add_noise=False)[0]
    assert torch.equal(rest["samples"], whole["samples"])


def test_the_text_encoder_refuses_an_svd_image_encoder(tiny_svd):
    with pytest.raises(NodeInputError, match=r"T2VTextEncode: input 'clip'.*CLIP image encoder.*T2VSVDConditioning"):
        T2VTextEncode().encode(tiny_svd[1], "a cat")


def test_the_conditioning_refuses_a_text_encoder(tiny_svd, tiny_sd):
    with pytest.raises(NodeInputError, match=r"T2VSVDConditioning: input 'clip'.*Stable Video Diffusion"):
        T2VSVDConditioning().encode(tiny_sd[1], tiny_svd[2], as_image(photo(32, 32)), 32, 32, 2, 7, 127, 0.02, 0, 1.0)


@pytest.mark.parametrize("image, width, match", [
    (torch.rand(1, 32, 32, 4), 32, r"input 'image'.*\[N, H, W, 3\]"),  # RGBA
    (torch.rand(1, 32, 32), 32, r"input 'image'.*\[N, H, W, 3\]"),  # a MASK
    (torch.rand(2, 32, 32, 3), 32, r"input 'image'.*batch of 2 images.*ImageFromBatch"),
    (torch.rand(1, 32, 32, 3), 36, r"input 'width'.*36 is not a multiple of 8"),
])
def test_the_conditioning_refuses_other_images_and_sizes(tiny_svd, image, width, match):
    _model, clip, vae = tiny_svd
    with pytest.raises(NodeInputError, match=match):
        T2VSVDConditioning().encode(clip, vae, image, width, 32, 2, 7, 127, 0.02, 0, 1.0)


def test_an_svd_model_needs_image_conditioning(tiny_svd, tiny_sd):
    model = tiny_svd[0]
    latent = {"samples": torch.zeros(1, 4, 2, 4, 4)}
    text = encode(tiny_sd[1], "a cat")
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'positive'.*driven by an image.*T2VSVDConditioning"):
        T2VSampler().sample(model, text, text, latent, 0, 2, 3.0, "euler", "karras", 1.0)


def test_svd_conditioning_on_another_model_is_refused(tiny_svd, tiny_sd):
    positive, negative, latent = svd_inputs(tiny_svd)
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'positive'.*Stable Video Diffusion image conditioning"):
        T2VSampler().sample(tiny_sd[0], positive, negative, latent, 0, 2, 3.0, "euler", "normal", 1.0)


def test_svd_samples_only_with_continuous_timesteps(tiny_svd):
    model, _clip, vae = tiny_svd
    positive, negative, latent = svd_inputs(tiny_svd)
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'sampler_name'.*continuous timesteps.*use euler"):
        T2VSampler().sample(model, positive, negative, latent, 0, 2, 3.0, "ddim", "normal", 1.0)
    with pytest.raises(NodeInputError, match=r"T2VVideoToVideo: input 'sampler_name'.*continuous timesteps"):
        T2VVideoToVideo().refine(model, positive, negative, vae, as_image(photo(32, 32)), 0, 2, 3.0, "dpmpp_2m",
                                 "karras", 0.5)


def test_nodes_that_cannot_run_svd_refuse_it(tiny_svd):
    model = tiny_svd[0]
    with pytest.raises(NodeInputError, match=r"T2VCrossFrameAttention: input 'model'.*Stable Video Diffusion"):
        T2VCrossFrameAttention().patch(model)
    with pytest.raises(NodeInputError, match=r"T2VContextWindows: input 'model'.*Stable Video Diffusion"):
        T2VContextWindows().patch(model, 8, 2, "standard_static", "pyramid")
    with pytest.raises(NodeInputError, match=r"T2VVAETiling: input 'vae'.*temporal decoder.*frames_per_batch"):
        T2VVAETiling().patch(tiny_svd[2], 256, 32)
