"""Video InstructPix2Pix against StableDiffusionInstructPix2PixPipeline with cross-frame attention (3 groups)."""

from __future__ import annotations

import pytest
import torch
from reference_pipelines import generator, reference_scheduler
from test_controlnet import HEIGHT, WIDTH
from test_text2video_zero import NEGATIVE, decode, encode

from comfyui_text2video.errors import NodeInputError
from comfyui_text2video.nodes.instruct_pix2pix import T2VInstructPix2PixConditioning
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.text2video_zero import T2VCrossFrameAttention

INSTRUCTION = "make it winter"


def input_frames(frames=3):
    """Frames that differ: a gradient shifting from frame to frame."""
    ramp = torch.linspace(0, 1, WIDTH).view(1, WIDTH, 1)
    return torch.stack([((ramp + 0.2 * i) % 1).expand(HEIGHT, WIDTH, 3) for i in range(frames)]).contiguous()


def reference(handles, images, *, sampler, steps, cfg, image_cfg, seed=3, groups=3):
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
        CrossFrameAttnProcessor2_0)

    model, clip, vae = handles
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae.vae, text_encoder=clip.text_encoder, tokenizer=clip.tokenizer, unet=model.unet,
        scheduler=reference_scheduler(sampler, "normal", model.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    originals = model.unet.attn_processors
    model.unet.set_attn_processor(CrossFrameAttnProcessor2_0(batch_size=groups))
    try:
        video = pipe(prompt=[INSTRUCTION] * images.shape[0], negative_prompt=[NEGATIVE] * images.shape[0],
                     image=images.permute(0, 3, 1, 2), num_inference_steps=steps, guidance_scale=cfg,
                     image_guidance_scale=image_cfg, generator=generator(seed), output_type="pt").images
    finally:
        model.unet.set_attn_processor(originals)
    return torch.as_tensor(video).permute(0, 2, 3, 1)


def graph(handles, images, *, sampler, steps, cfg, image_cfg, seed=3):
    model, clip, vae = handles
    positive, negative, latent = T2VInstructPix2PixConditioning().encode(
        encode(clip, INSTRUCTION), encode(clip, NEGATIVE), vae, images, image_cfg)
    patched = T2VCrossFrameAttention().patch(model)[0]
    out = T2VSampler().sample(patched, positive, negative, latent, seed, steps, cfg, sampler, "normal", 1.0,
                              frame_noise="per_frame")[0]
    return decode(handles, out)


@pytest.mark.parametrize("sampler, steps, cfg, image_cfg", [
    ("ddim", 4, 7.5, 1.5),
    ("euler_ancestral", 4, 5.0, 1.2),
    ("dpmpp_2m", 3, 7.5, 1.0),  # image_cfg = 1: still guided, as in the reference
])
def test_video_instruct_pix2pix_equals_the_seed_recipe(tiny_ip2p, sampler, steps, cfg, image_cfg):
    images = input_frames()
    expected = reference(tiny_ip2p, images, sampler=sampler, steps=steps, cfg=cfg, image_cfg=image_cfg)
    ours = graph(tiny_ip2p, images, sampler=sampler, steps=steps, cfg=cfg, image_cfg=image_cfg)
    assert ours.shape == images.shape
    assert (ours - expected).abs().max() < 1e-3


def test_without_guidance_every_frame_still_attends_to_frame_zero(tiny_ip2p):
    """cfg <= 1 turns guidance off (one branch): the recipe's three-branch processor would then let each frame
    attend only to itself; the pack keeps Text2Video-Zero's cross-frame attention, i.e. the reference's with one."""
    images = input_frames()
    ours = graph(tiny_ip2p, images, sampler="euler_ancestral", steps=3, cfg=1.0, image_cfg=1.5)
    expected = reference(tiny_ip2p, images, sampler="euler_ancestral", steps=3, cfg=1.0, image_cfg=1.5, groups=1)
    assert (ours - expected).abs().max() < 1e-3
    per_frame = reference(tiny_ip2p, images, sampler="euler_ancestral", steps=3, cfg=1.0, image_cfg=1.5)
    assert (per_frame[0] - expected[0]).abs().max() < 1e-3 and (per_frame - expected).abs().max() > 1e-2


def test_instruct_pix2pix_conditioning_on_a_4_channel_model_is_refused(tiny_sd, tiny_ip2p):
    images = input_frames(2)
    model, clip, vae = tiny_sd
    positive, negative, latent = T2VInstructPix2PixConditioning().encode(
        encode(clip, INSTRUCTION), encode(clip, NEGATIVE), vae, images, 1.5)
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'positive'.*image latents for an InstructPix2Pix"):
        T2VSampler().sample(model, positive, negative, latent, 0, 2, 7.5, "ddim", "normal", 1.0)


def test_an_instruct_pix2pix_model_needs_its_conditioning(tiny_ip2p):
    model, clip, _vae = tiny_ip2p
    latent = {"samples": torch.zeros(1, 4, 2, HEIGHT // 8, WIDTH // 8)}
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'positive'.*T2VInstructPix2PixConditioning"):
        T2VSampler().sample(model, encode(clip, INSTRUCTION), encode(clip, NEGATIVE), latent, 0, 2, 7.5, "ddim",
                            "normal", 1.0)
