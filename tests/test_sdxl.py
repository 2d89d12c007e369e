"""SDXL: loading, text encoding, sampling and Text2Video-Zero against diffusers' SDXL pipelines."""

from __future__ import annotations

import pytest
import torch
from reference_pipelines import generator, sdxl_modules
from test_text2video_zero import NEGATIVE, PROMPT, all_in_one, composed, decode, encode

from comfyui_text2video.errors import NodeInputError
from comfyui_text2video.nodes.latent import T2VEmptyLatentVideo
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.vae import T2VVAEDecode


def test_sdxl_conditioning_is_core_style_with_the_pooled_embedding(tiny_sdxl):
    from diffusers import StableDiffusionXLPipeline

    model, clip, vae = tiny_sdxl
    assert model.family.name == "sdxl" and model.latent_scale == pytest.approx(0.13025)
    [[embeds, meta]] = encode(clip, PROMPT)
    pipe = StableDiffusionXLPipeline(**sdxl_modules(*tiny_sdxl))
    reference, _neg, pooled, _neg_pooled = pipe.encode_prompt(PROMPT, do_classifier_free_guidance=False)
    assert embeds.shape == (1, 77, 64) and meta["pooled_output"].shape == (1, 32)
    assert torch.equal(embeds, reference) and torch.equal(meta["pooled_output"], pooled)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_sampler_on_one_frame_equals_the_sdxl_image_pipeline(tiny_sdxl, sampler):
    from diffusers import StableDiffusionXLPipeline

    model, clip, vae = tiny_sdxl
    pipe = StableDiffusionXLPipeline(**sdxl_modules(*tiny_sdxl, sampler_name=sampler))
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(PROMPT, negative_prompt=NEGATIVE, height=48, width=64, num_inference_steps=4, guidance_scale=6.0,
                     generator=generator(3), output_type="pt").images
    latent = T2VEmptyLatentVideo().create(64, 48, 1, 1)[0]
    out = T2VSampler().sample(model, encode(clip, PROMPT), encode(clip, NEGATIVE), latent, 3, 4, 6.0, sampler,
                              "normal", 1.0)[0]
    ours = T2VVAEDecode().decode(vae, out)[0]
    assert (ours - reference.permute(0, 2, 3, 1)).abs().max() < 1e-3


def zero_sdxl_reference(handles, *, sampler, steps=6, t0=2, t1=4, frames=4, motion=(12.0, 12.0), seed=5):
    from diffusers import TextToVideoZeroSDXLPipeline

    pipe = TextToVideoZeroSDXLPipeline(**sdxl_modules(*handles, sampler_name=sampler))
    pipe.set_progress_bar_config(disable=True)
    video = pipe(PROMPT, negative_prompt=NEGATIVE, video_length=frames, height=48, width=64,
                 num_inference_steps=steps, guidance_scale=7.5, motion_field_strength_x=motion[0],
                 motion_field_strength_y=motion[1], t0=t0, t1=t1, generator=generator(seed), output_type="pt").images
    return torch.as_tensor(video).permute(0, 2, 3, 1)


@pytest.mark.parametrize("sampler, steps, t0, t1, frames, motion", [
    ("ddim", 6, 2, 4, 3, (12.0, 12.0)),
    ("dpmpp_2m", 7, 1, 4, 3, (-20.0, 8.0)),
    ("unipc", 6, 2, 3, 2, (30.0, 0.0)),
])
def test_text2video_zero_equals_the_sdxl_reference(tiny_sdxl, sampler, steps, t0, t1, frames, motion):
    reference = zero_sdxl_reference(tiny_sdxl, sampler=sampler, steps=steps, t0=t0, t1=t1, frames=frames,
                                    motion=motion)
    ours = decode(tiny_sdxl, all_in_one(tiny_sdxl, sampler=sampler, steps=steps, t0=t0, t1=t1, frames=frames,
                                        motion=motion))
    assert ours.shape == (frames, 48, 64, 3)
    assert (ours - reference).abs().max() < 1e-3


def test_with_a_sigma_scale_sampler_frame_zero_equals_the_sdxl_reference_and_the_moved_frames_do_not(tiny_sdxl):
    """The SDXL pipeline re-noises the moved frames with the alpha-scale formula on euler's sigma-scale latents;
    the pack takes that step in sigma space (checked against the reference's step in test_text2video_zero)."""
    reference = zero_sdxl_reference(tiny_sdxl, sampler="euler", frames=3)
    ours = decode(tiny_sdxl, all_in_one(tiny_sdxl, sampler="euler", steps=6, t0=2, t1=4, frames=3))
    assert (ours[0] - reference[0]).abs().max() < 1e-3
    assert (ours[1:] - reference[1:]).abs().max() > 1e-2


@pytest.mark.parametrize("sampler", ["ddim", "euler"])
def test_composed_graph_equals_all_in_one_on_sdxl(tiny_sdxl, sampler):
    assert torch.equal(composed(tiny_sdxl, sampler=sampler, frames=3)["samples"],
                       all_in_one(tiny_sdxl, sampler=sampler, frames=3)["samples"])


def test_sd_conditioning_on_sdxl_is_refused(tiny_sdxl):
    latent = T2VEmptyLatentVideo().create(64, 48, 1, 1)[0]
    foreign = [[torch.zeros(1, 77, 64), {}]]  # right width, but no pooled embedding
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'positive'.*needs a pooled_output"):
        T2VSampler().sample(tiny_sdxl[0], foreign, foreign, latent, 0, 2, 5.0, "ddim", "normal", 1.0)
