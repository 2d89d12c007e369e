"""Text2Video-Zero: the all-in-one node and the composed graph against TextToVideoZeroPipeline."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from reference_pipelines import generator, reference_scheduler, zero_pipeline

from comfyui_text2video import bridge
from comfyui_text2video.errors import NodeInputError
from comfyui_text2video.nodes.conditioning import T2VTextEncode
from comfyui_text2video.nodes.latent import T2VEmptyLatentVideo
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.text2video_zero import (T2VCrossFrameAttention, T2VMotionFieldLatent,
                                                      T2VText2VideoZero, T2VZeroSteps)
from comfyui_text2video.nodes.vae import T2VVAEDecode

PROMPT, NEGATIVE = "a panda dancing", "ugly"


def encode(clip, text):
    return T2VTextEncode().encode(clip, text)[0]


def reference_frames(handles, *, sampler, steps, t0, t1, frames, motion, seed=5, width=64, height=48,
                     frame_ids=None):
    pipe = zero_pipeline(*handles, sampler)
    images = pipe(PROMPT, video_length=frames, height=height, width=width, num_inference_steps=steps,
                  guidance_scale=7.5, negative_prompt=NEGATIVE, motion_field_strength_x=motion[0],
                  motion_field_strength_y=motion[1], t0=t0, t1=t1, generator=generator(seed), output_type="pt",
                  frame_ids=frame_ids).images
    return torch.as_tensor(images)


def all_in_one(handles, *, sampler="ddim", steps=6, t0=2, t1=4, frames=4, motion=(12.0, 12.0), seed=5, width=64,
               height=48, cfg=7.5, chunk_size=0):
    model, clip, _vae = handles
    return T2VText2VideoZero().generate(model, encode(clip, PROMPT), encode(clip, NEGATIVE), seed, steps, cfg, sampler,
                                        "normal", width, height, frames, motion[0], motion[1], t0, t1,
                                        chunk_size)[0]


def decode(handles, latent):
    return T2VVAEDecode().decode(handles[2], latent)[0]


@pytest.mark.parametrize("sampler, steps, t0, t1, frames, motion", [
    ("ddim", 6, 2, 4, 4, (12.0, 12.0)),
    ("ddim", 8, 1, 6, 3, (-20.0, 5.0)),
    ("ddim", 6, 0, 1, 2, (0.0, 0.0)),
    ("dpmpp_2m", 8, 3, 5, 5, (-8.0, 4.0)),
    ("dpmpp_2m", 7, 2, 3, 3, (40.0, -30.0)),
    ("ddim", 6, 2, 5, 3, (12.0, 12.0)),  # t1 = steps - 1: frame 0 is still pure noise at t1
])
def test_matches_reference(tiny_sd, sampler, steps, t0, t1, frames, motion):
    reference = reference_frames(tiny_sd, sampler=sampler, steps=steps, t0=t0, t1=t1, frames=frames, motion=motion)
    ours = decode(tiny_sd, all_in_one(tiny_sd, sampler=sampler, steps=steps, t0=t0, t1=t1, frames=frames,
                                      motion=motion))
    assert ours.shape == (frames, 48, 64, 3)
    assert (ours - reference).abs().max() < 1e-3


@pytest.mark.parametrize("frames, chunk_size", [(7, 3), (5, 4), (3, 8)])
def test_chunks_match_the_reference_frame_ids_recipe(tiny_sd, frames, chunk_size):
    pieces = []
    for start in range(0, frames, chunk_size - 1):
        end = min(start + chunk_size - 1, frames)
        frame_ids = [0, *range(start, end)]
        pieces.append(reference_frames(tiny_sd, sampler="ddim", steps=6, t0=2, t1=4, frames=len(frame_ids),
                                       motion=(12.0, 12.0), frame_ids=frame_ids)[1:])
    reference = torch.cat(pieces)
    ours = decode(tiny_sd, all_in_one(tiny_sd, frames=frames, chunk_size=chunk_size))
    assert ours.shape[0] == frames
    assert (ours - reference).abs().max() < 1e-3


def composed(handles, *, sampler, steps=6, t0=2, t1=4, frames=4, motion=(12.0, 12.0), seed=5):
    """The algorithm as separate nodes, wired as example_workflows/text2video_zero_composed.json."""
    model, clip, _vae = handles
    positive, negative = encode(clip, PROMPT), encode(clip, NEGATIVE)
    t1_step, t0_step = T2VZeroSteps().split(steps, t0, t1)
    sampler_node = T2VSampler()
    anchor = T2VEmptyLatentVideo().create(64, 48, 1, 1)[0]
    at_t1 = sampler_node.sample(model, positive, negative, anchor, seed, steps, 7.5, sampler, "normal", 1.0,
                                end_step=t1_step, return_with_leftover_noise=True)[0]
    at_t0 = sampler_node.sample(model, positive, negative, at_t1, seed, steps, 7.5, sampler, "normal", 1.0,
                                start_step=t1_step, end_step=t0_step, add_noise=False,
                                return_with_leftover_noise=True)[0]
    moved = T2VMotionFieldLatent().move(at_t1, at_t0, frames, *motion)[0]
    cross_frame = T2VCrossFrameAttention().patch(model)[0]
    return sampler_node.sample(cross_frame, positive, negative, moved, seed, steps, 7.5, sampler, "normal", 1.0,
                               start_step=t1_step, add_noise=False)[0]


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "euler", "euler_ancestral"])
def test_composed_graph_equals_all_in_one(tiny_sd, sampler):
    ours = all_in_one(tiny_sd, sampler=sampler)["samples"]
    assert torch.equal(composed(tiny_sd, sampler=sampler)["samples"], ours)


@pytest.mark.parametrize("sampler, cfg", [("euler", 7.5), ("ddim", 1.0), ("heun", 1.0), ("lms", 7.5)])
def test_where_the_reference_fails_frame_zero_is_a_plain_image_generation(tiny_sd, sampler, cfg):
    """cfg <= 1 and float-timestep samplers crash the reference; here frame 0 is the plain generation."""
    model, clip, _vae = tiny_sd
    video = all_in_one(tiny_sd, sampler=sampler, cfg=cfg, motion=(0.0, 0.0))["samples"]
    assert torch.isfinite(video).all()
    plain = T2VSampler().sample(model, encode(clip, PROMPT), encode(clip, NEGATIVE),
                                T2VEmptyLatentVideo().create(64, 48, 1, 1)[0], 5, 6, cfg, sampler, "normal",
                                1.0)[0]["samples"]
    assert (video[:, :, :1] - plain).abs().max() < 1e-5 * plain.abs().max()  # batch-size roundoff only


def test_cross_frame_patch_is_removed_after_an_interrupt(tiny_sd, monkeypatch):
    model, _clip, _vae = tiny_sd
    originals = dict(model.unet.attn_processors)
    patched_when_interrupted = []

    def interrupt_in_the_cross_frame_stage():
        patched = model.unet.attn_processors != originals
        if patched:
            patched_when_interrupted.append(True)
            raise KeyboardInterrupt("interrupted")

    monkeypatch.setattr(bridge, "check_interrupt", interrupt_in_the_cross_frame_stage)
    with pytest.raises(KeyboardInterrupt):
        all_in_one(tiny_sd)
    assert patched_when_interrupted  # it was interrupted while the patch was installed
    assert model.unet.attn_processors == originals


def test_patched_and_unpatched_branches_do_not_see_each_other(tiny_sd):
    model, clip, _vae = tiny_sd
    positive, negative = encode(clip, PROMPT), encode(clip, NEGATIVE)
    latent = {"samples": torch.randn(1, 4, 3, 6, 8, generator=generator(1))}

    def run(handle):
        return T2VSampler().sample(handle, positive, negative, latent, 1, 3, 7.5, "ddim", "normal", 0.7)[0]["samples"]

    plain_alone = run(model)
    patched = T2VCrossFrameAttention().patch(model)[0]
    patched_alone = run(patched)
    assert not torch.allclose(plain_alone, patched_alone)
    assert torch.equal(run(model), plain_alone)  # the patch did not leak into the loaded model
    assert patched.unet is model.unet and not model.patches


@pytest.mark.parametrize("steps, t0, t1, message", [
    (30, 44, 47, r"input 't1'.*needs more than 47 steps.*defaults t0 = 44, t1 = 47 need 48 steps"),
    (50, 47, 44, r"input 't0'.*0 <= t0 < t1"),
])
def test_schedule_is_validated_with_an_explanation(tiny_sd, steps, t0, t1, message):
    with pytest.raises(NodeInputError, match=message):
        all_in_one(tiny_sd, steps=steps, t0=t0, t1=t1)
    with pytest.raises(NodeInputError, match=message.replace("input", "T2VZeroSteps: input")):
        T2VZeroSteps().split(steps, t0, t1)


def test_chunk_size_one_is_refused(tiny_sd):
    with pytest.raises(NodeInputError, match=r"T2VText2VideoZero: input 'chunk_size'.*at least 2"):
        all_in_one(tiny_sd, chunk_size=1)


def test_a_text_to_video_model_is_refused(tiny_t2v):
    with pytest.raises(NodeInputError, match=r"T2VCrossFrameAttention: input 'model'.*needs an image model"):
        T2VCrossFrameAttention().patch(tiny_t2v[0])


def test_motion_node_needs_sampler_state(tiny_sd):
    plain = {"samples": torch.zeros(1, 4, 1, 6, 8)}
    with pytest.raises(NodeInputError, match=r"T2VMotionFieldLatent: input 'latent_t1'.*no sampler state"):
        T2VMotionFieldLatent().move(plain, plain, 4, 1.0, 1.0)


def test_progress_counts_every_stage_on_one_bar(tiny_sd, progress_ticks):
    all_in_one(tiny_sd, steps=6, t0=2, t1=4, frames=5, chunk_size=3)  # frame 0: 3 steps, then 3 chunks x 5
    assert progress_ticks == [(done, 18) for done in range(1, 19)]


def test_a_v_prediction_image_model_matches_the_reference(tiny_sd_v):
    """Stable Diffusion 2.x 768 models (v-prediction) make videos as the reference does."""
    assert tiny_sd_v[0].scheduler_config["prediction_type"] == "v_prediction"
    reference = reference_frames(tiny_sd_v, sampler="ddim", steps=6, t0=2, t1=4, frames=3, motion=(12.0, -8.0))
    ours = decode(tiny_sd_v, all_in_one(tiny_sd_v, steps=6, t0=2, t1=4, frames=3, motion=(12.0, -8.0)))
    assert (ours - reference).abs().max() < 1e-3


@pytest.mark.parametrize("sampler", ["euler", "lms", "heun"])
def test_sigma_space_renoise_is_the_references_forward_step(tiny_sd, sampler):
    """Float-timestep samplers crash the reference; the moved frames must still be its DDPM forward step
    from t0 to t1 (with the exact alpha ratio), taken on the alpha scale and brought back to sigma scale."""
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
        TextToVideoZeroPipeline, create_motion_field_and_warp_latents)

    model, _clip, _vae = tiny_sd
    steps, t0, t1, frames, motion, seed = 6, 2, 4, 4, (12.0, -8.0), 5
    t1_step, t0_step = T2VZeroSteps().split(steps, t0, t1)
    positive, negative = encode(tiny_sd[1], PROMPT), encode(tiny_sd[1], NEGATIVE)
    anchor = T2VEmptyLatentVideo().create(64, 48, 1, 1)[0]
    at_t1 = T2VSampler().sample(model, positive, negative, anchor, seed, steps, 7.5, sampler, "normal", 1.0,
                                end_step=t1_step, return_with_leftover_noise=True)[0]
    at_t0 = T2VSampler().sample(model, positive, negative, at_t1, seed, steps, 7.5, sampler, "normal", 1.0,
                                start_step=t1_step, end_step=t0_step, add_noise=False,
                                return_with_leftover_noise=True)[0]
    moved = T2VMotionFieldLatent().move(at_t1, at_t0, frames, *motion)[0]["samples"] * model.latent_scale

    schedule = reference_scheduler(sampler, "normal", model.scheduler_config)
    schedule.set_timesteps(steps)
    sigmas = torch.unique_consecutive(schedule.sigmas)  # one sigma per step (heun repeats them)
    alpha_bar_t0, alpha_bar_t1 = 1 / (1 + sigmas[t0_step] ** 2), 1 / (1 + sigmas[t1_step] ** 2)
    rng = generator(seed)
    torch.randn(1, 4, 6, 8, generator=rng)  # frame 0's starting noise; these samplers draw nothing else
    x_t0 = (at_t0["samples"][:, :, 0] * model.latent_scale).repeat(frames - 1, 1, 1, 1)
    warped = create_motion_field_and_warp_latents(*motion, frame_ids=list(range(1, frames)), latents=x_t0)
    ddpm = SimpleNamespace(scheduler=SimpleNamespace(alphas=(alpha_bar_t1 / alpha_bar_t0).reshape(1)))
    forward = TextToVideoZeroPipeline.forward_loop(ddpm, warped * alpha_bar_t0.sqrt(), 0, 1, rng)
    expected = forward / alpha_bar_t1.sqrt()

    assert torch.allclose(moved[:, :, 0], at_t1["samples"][:, :, 0] * model.latent_scale, rtol=1e-6, atol=0)
    assert (moved[0, :, 1:].permute(1, 0, 2, 3) - expected).abs().max() < 1e-4 * expected.abs().max()
