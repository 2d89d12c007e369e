"""AnimateDiff: a motion adapter on a Stable Diffusion model against AnimateDiffPipeline and
AnimateDiffVideoToVideoPipeline (with FreeInit), and the refusals around it."""

from __future__ import annotations

import pytest
import torch
from reference_pipelines import frames_of, generator, reference_scheduler

from comfyui_text2video.errors import NodeInputError
from comfyui_text2video.nodes.animatediff import T2VApplyMotionAdapter, T2VFreeInit, T2VMotionAdapterLoader
from comfyui_text2video.nodes.conditioning import T2VTextEncode
from comfyui_text2video.nodes.latent import T2VEmptyLatentVideo
from comfyui_text2video.nodes.long_video import T2VContextWindows
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.vae import T2VVAEDecode
from comfyui_text2video.nodes.video2video import T2VVideoToVideo

PROMPT, NEGATIVE = "a panda dancing", "ugly"
SIZE = 32


@pytest.fixture(scope="session")
def adapter(data_dir):
    return T2VMotionAdapterLoader().load("builtin:tiny-motion-adapter")[0]


@pytest.fixture(scope="session")
def animated(tiny_sd, adapter):
    """(AnimateDiff model, clip, vae) of builtin:tiny-sd15 with the built-in motion adapter."""
    model, clip, vae = tiny_sd
    return T2VApplyMotionAdapter().patch(model, adapter)[0], clip, vae


def pipeline(kind, tiny_sd, adapter, sampler):
    import diffusers

    model, clip, vae = tiny_sd
    pipe = getattr(diffusers, kind)(vae=vae.vae, text_encoder=clip.text_encoder, tokenizer=clip.tokenizer,
                                    unet=model.unet, motion_adapter=adapter.module,
                                    scheduler=reference_scheduler(sampler, "normal", model.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encode(clip, text):
    return T2VTextEncode().encode(clip, text)[0]


def text2video(handles, *, sampler, steps, frames, cfg=7.5, seed=4):
    model, clip, vae = handles
    latent = T2VEmptyLatentVideo().create(SIZE, SIZE, frames, 1)[0]
    out = T2VSampler().sample(model, encode(clip, PROMPT), encode(clip, NEGATIVE), latent, seed, steps, cfg, sampler,
                              "normal", 1.0)[0]
    return T2VVAEDecode().decode(vae, out)[0]


def input_video(frames, size):
    ramp = torch.linspace(0, 1, size).view(1, size, 1)
    return torch.stack([((ramp + 0.1 * i) % 1).expand(size, size, 3) for i in range(frames)]).contiguous()


@pytest.mark.parametrize("sampler, steps, frames", [("ddim", 3, 6), ("euler_ancestral", 3, 5), ("dpmpp_2m", 2, 4)])
def test_text_to_video_equals_animatediff_pipeline(tiny_sd, adapter, animated, sampler, steps, frames):
    pipe = pipeline("AnimateDiffPipeline", tiny_sd, adapter, sampler)
    expected = pipe(PROMPT, num_frames=frames, height=SIZE, width=SIZE, num_inference_steps=steps, guidance_scale=7.5,
                    negative_prompt=NEGATIVE, generator=generator(4), output_type="pt").frames
    ours = text2video(animated, sampler=sampler, steps=steps, frames=frames)
    assert ours.shape == (frames, SIZE, SIZE, 3)
    assert (ours - frames_of(expected)).abs().max() < 1e-3


@pytest.mark.parametrize("sampler, frames, size", [("ddim", 4, 32), ("euler_ancestral", 17, 16)])
def test_video_to_video_equals_animatediff_video_to_video_pipeline(tiny_sd, adapter, animated, sampler, frames, size):
    video = input_video(frames, size)
    pipe = pipeline("AnimateDiffVideoToVideoPipeline", tiny_sd, adapter, sampler)
    expected = pipe(video=video.permute(0, 3, 1, 2).unsqueeze(0), prompt=PROMPT, negative_prompt=NEGATIVE, height=size,
                    width=size,
                    num_inference_steps=4, guidance_scale=7.5, strength=0.5, generator=generator(6),
                    output_type="pt").frames
    model, clip, vae = animated
    out = T2VVideoToVideo().refine(model, encode(clip, PROMPT), encode(clip, NEGATIVE), vae, video, 6, 4, 7.5, sampler,
                                   "normal", 0.5)[0]
    ours = T2VVAEDecode().decode(vae, out)[0]
    assert (ours - frames_of(expected)).abs().max() < 1e-3


@pytest.mark.parametrize("method, sampler", [("butterworth", "ddim"), ("gaussian", "ddim"), ("ideal", "dpmpp_2m")])
def test_free_init_equals_enable_free_init(tiny_sd, adapter, animated, method, sampler):
    pipe = pipeline("AnimateDiffPipeline", tiny_sd, adapter, sampler)
    pipe.enable_free_init(num_iters=2, method=method, order=4, spatial_stop_frequency=0.3, temporal_stop_frequency=0.2)
    expected = pipe(PROMPT, num_frames=4, height=SIZE, width=SIZE, num_inference_steps=2, guidance_scale=7.5,
                    negative_prompt=NEGATIVE, generator=generator(4), output_type="pt").frames
    model, clip, vae = animated
    free = T2VFreeInit().patch(model, 2, method, 4, 0.3, 0.2)[0]
    ours = text2video((free, clip, vae), sampler=sampler, steps=2, frames=4)
    plain = text2video(animated, sampler=sampler, steps=2, frames=4)
    assert (ours - frames_of(expected)).abs().max() < 1e-3
    assert (ours - plain).abs().max() > 1e-2  # the second pass changed the video


def test_free_init_with_a_stochastic_sampler_equals_enable_free_init(tiny_sd, adapter, animated):
    # ddpm draws noise at every step: each pass takes it from the seed's generator, on the video-shaped latents
    pipe = pipeline("AnimateDiffPipeline", tiny_sd, adapter, "ddpm")
    pipe.enable_free_init(num_iters=2, method="butterworth", order=4, spatial_stop_frequency=0.25,
                          temporal_stop_frequency=0.25)
    expected = pipe(PROMPT, num_frames=3, height=SIZE, width=SIZE, num_inference_steps=3, guidance_scale=7.5,
                    negative_prompt=NEGATIVE, generator=generator(4), output_type="pt").frames
    model, clip, vae = animated
    free = T2VFreeInit().patch(model, 2, "butterworth", 4, 0.25, 0.25)[0]
    ours = text2video((free, clip, vae), sampler="ddpm", steps=3, frames=3)
    assert (ours - frames_of(expected)).abs().max() < 1e-3


def test_free_init_ticks_the_progress_bar_in_every_pass_and_stops_when_interrupted(animated, progress_ticks):
    progress_ticks.cancel_at = 4  # the user presses Cancel during the second pass
    model, clip, vae = animated
    free = T2VFreeInit().patch(model, 2, "butterworth", 4, 0.25, 0.25)[0]
    with pytest.raises(KeyboardInterrupt):
        text2video((free, clip, vae), sampler="ddim", steps=3, frames=2)
    assert progress_ticks == [(1, 6), (2, 6), (3, 6), (4, 6)]  # two passes of 3 steps on one bar; none after Cancel
    fast = T2VFreeInit().patch(model, 3, "butterworth", 4, 0.25, 0.25, fast_sampling=True)[0]
    progress_ticks.clear()
    with pytest.raises(KeyboardInterrupt):
        text2video((fast, clip, vae), sampler="ddim", steps=6, frames=2)
    assert progress_ticks[-1] == (4, 2 + 4 + 6)  # coarse to fine: passes of 2, 4 and 6 steps


def test_free_init_fast_sampling_equals_enable_free_init(tiny_sd, adapter, animated):
    pipe = pipeline("AnimateDiffPipeline", tiny_sd, adapter, "ddim")
    pipe.enable_free_init(num_iters=3, use_fast_sampling=True)
    expected = pipe(PROMPT, num_frames=3, height=SIZE, width=SIZE, num_inference_steps=3, guidance_scale=7.5,
                    negative_prompt=NEGATIVE, generator=generator(4), output_type="pt").frames
    model, clip, vae = animated
    free = T2VFreeInit().patch(model, 3, "butterworth", 4, 0.25, 0.25, fast_sampling=True)[0]
    ours = text2video((free, clip, vae), sampler="ddim", steps=3, frames=3)
    assert (ours - frames_of(expected)).abs().max() < 1e-3


def test_the_original_model_is_untouched(tiny_sd, animated):
    model = tiny_sd[0]
    assert type(model.unet).__name__ == "UNet2DConditionModel" and model.family.name == "stable_diffusion"
    assert animated[0].family.name == "animatediff" and animated[0].unet is not model.unet
    shared = animated[0].unet.conv_in.weight
    assert shared is model.unet.conv_in.weight  # the weights are shared, not copied


def test_an_adapter_of_another_precision_animates_the_model_and_stays_as_it_was(data_dir, adapter):
    from comfyui_text2video.models.loading import load_model

    model, clip, _vae = load_model("builtin:tiny-sd15", "bfloat16")
    patched = T2VApplyMotionAdapter().patch(model, adapter)[0]
    assert {p.dtype for p in patched.unet.parameters()} == {torch.bfloat16}
    assert adapter.module.dtype == torch.float32
    latent = T2VEmptyLatentVideo().create(16, 16, 3, 1)[0]
    out = T2VSampler().sample(patched, encode(clip, PROMPT), encode(clip, NEGATIVE), latent, 0, 1, 7.5, "ddim",
                              "normal", 1.0)[0]["samples"]
    assert out.shape == (1, 4, 3, 2, 2) and torch.isfinite(out).all()


def test_frames_past_the_adapter_limit_need_context_windows(animated):
    model, clip, vae = animated
    latent = T2VEmptyLatentVideo().create(16, 16, 34, 1)[0]
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'latent': 34 frames are more than the 32 .*"
                                             r"T2VContextWindows"):
        T2VSampler().sample(model, encode(clip, PROMPT), encode(clip, NEGATIVE), latent, 0, 1, 7.5, "ddim", "normal",
                            1.0)
    too_long = T2VContextWindows().patch(model, 33, 4, "standard_static", "pyramid")[0]
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'model': T2VContextWindows' context_length 33"):
        T2VSampler().sample(too_long, encode(clip, PROMPT), encode(clip, NEGATIVE), latent, 0, 1, 7.5, "ddim",
                            "normal", 1.0)
    windowed = T2VContextWindows().patch(model, 16, 4, "standard_static", "pyramid")[0]
    out = T2VSampler().sample(windowed, encode(clip, PROMPT), encode(clip, NEGATIVE), latent, 0, 1, 7.5, "ddim",
                              "normal", 1.0)[0]["samples"]
    assert out.shape == (1, 4, 34, 2, 2) and torch.isfinite(out).all()


def test_an_adapter_with_a_shorter_limit_names_its_own_limit(data_dir, tiny_sd):
    from diffusers import MotionAdapter

    MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=4,
                  motion_norm_num_groups=8, motion_max_seq_length=12).save_pretrained(
        data_dir / "models" / "animatediff_models" / "short-adapter", safe_serialization=True)
    model, clip, _vae = tiny_sd
    short = T2VApplyMotionAdapter().patch(model, T2VMotionAdapterLoader().load("short-adapter")[0])[0]
    latent = T2VEmptyLatentVideo().create(16, 16, 13, 1)[0]
    with pytest.raises(NodeInputError, match=r"13 frames are more than the 12 .*context_length of at most 12 on the "
                                             r"model, or make 12 frames or fewer"):
        T2VSampler().sample(short, encode(clip, PROMPT), encode(clip, NEGATIVE), latent, 0, 1, 7.5, "ddim", "normal",
                            1.0)


def test_a_motion_adapter_on_sdxl_is_refused(tiny_sdxl, adapter):
    with pytest.raises(NodeInputError, match=r"T2VApplyMotionAdapter: input 'model': .*Stable Diffusion XL model; "
                                             r"motion adapters animate Stable Diffusion 1.x models \(AnimateDiff SDXL"):
        T2VApplyMotionAdapter().patch(tiny_sdxl[0], adapter)


def test_free_init_refuses_partial_runs_and_sigma_scaled_samplers(animated):
    model, clip, _vae = animated
    free = T2VFreeInit().patch(model, 2, "butterworth", 4, 0.25, 0.25)[0]
    latent = T2VEmptyLatentVideo().create(16, 16, 2, 1)[0]
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'model': the model has T2VFreeInit"):
        T2VSampler().sample(free, encode(clip, PROMPT), encode(clip, NEGATIVE), latent, 0, 4, 7.5, "ddim", "normal",
                            0.5)
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'sampler_name': T2VFreeInit: "
                                             r"EulerDiscreteScheduler scales its noise by sigma.*use ddim"):
        T2VSampler().sample(free, encode(clip, PROMPT), encode(clip, NEGATIVE), latent, 0, 4, 7.5, "euler", "normal",
                            1.0)


def test_an_unknown_adapter_names_the_folder(adapter):
    with pytest.raises(NodeInputError, match=r"T2VMotionAdapterLoader: input 'adapter_name': no motion adapter named "
                                             r"'missing'.*animatediff_models"):
        T2VMotionAdapterLoader().load("missing")
