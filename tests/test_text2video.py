"""T2VSampler and friends against diffusers' TextToVideoSDPipeline / VideoToVideoSDPipeline."""

from __future__ import annotations

import pytest
import torch

from comfyui_text2video.errors import NodeInputError
from comfyui_text2video.nodes.conditioning import T2VTextEncode
from comfyui_text2video.nodes.latent import T2VEmptyLatentVideo
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.vae import T2VVAEDecode, T2VVAEEncode
from comfyui_text2video.samplers.schedulers import SAMPLER_NAMES
from comfyui_text2video.samplers.text2video import RESUME_KEY

from reference_pipelines import (REFERENCE_SCHEDULERS, frames_of, generator, text2video_pipeline,
                                 video2video_pipeline)

PROMPT, NEGATIVE = "a corgi surfing a wave", "blurry, low quality"
TOLERANCE = 1e-3


def encode(clip, text):
    return T2VTextEncode().encode(clip, text)[0]


def render(handles, *, seed=42, steps=4, cfg=7.5, sampler="ddim", scheduler="normal", width=64, height=48,
           frames=8, batch=1, prompt=PROMPT, negative=NEGATIVE, **sampler_options):
    model, clip, vae = handles
    latent = T2VEmptyLatentVideo().create(width, height, frames, batch)[0]
    latent = T2VSampler().sample(model, encode(clip, prompt), encode(clip, negative), latent, seed, steps, cfg,
                                 sampler, scheduler, **{"denoise": 1.0, **sampler_options})[0]
    return T2VVAEDecode().decode(vae, latent)[0]


@pytest.mark.parametrize("sampler, scheduler, width, height, cfg", [
    ("ddim", "normal", 64, 48, 7.5),
    ("dpmpp_2m", "normal", 64, 48, 7.5),
    ("euler_ancestral", "normal", 64, 48, 7.5),
    ("unipc", "normal", 64, 48, 7.5),
    ("dpmpp_2m", "karras", 64, 48, 7.5),
    ("ddim", "normal", 40, 72, 7.5),  # non-square, portrait
    ("euler", "normal", 64, 48, 1.0),  # no guidance
    ("ddim", "normal", 64, 48, 0.5),  # cfg below 1: no guidance either, the negative prompt is unused
    ("dpmpp_2m_sde", "normal", 64, 48, 7.5),  # SDE noise drawn from the seed
    ("dpmpp_2m_sde", "karras", 64, 48, 7.5),
    ("euler", "karras", 64, 48, 7.5),
])
def test_text_to_video_matches_reference(tiny_t2v, sampler, scheduler, width, height, cfg):
    pipe = text2video_pipeline(*tiny_t2v, sampler, scheduler)
    reference = pipe(PROMPT, negative_prompt=NEGATIVE, num_frames=8, height=height, width=width,
                     num_inference_steps=4, guidance_scale=cfg, generator=generator(42), output_type="pt").frames
    ours = render(tiny_t2v, sampler=sampler, scheduler=scheduler, width=width, height=height, cfg=cfg)
    assert ours.shape == (8, height, width, 3)
    assert (ours - frames_of(reference)).abs().max() < TOLERANCE


def test_batch_matches_reference_prompt_list(tiny_t2v):
    pipe = text2video_pipeline(*tiny_t2v)
    reference = pipe([PROMPT] * 2, negative_prompt=[NEGATIVE] * 2, num_frames=4, height=32, width=32,
                     num_inference_steps=3, guidance_scale=7.5, generator=generator(7), output_type="pt").frames
    ours = render(tiny_t2v, seed=7, steps=3, width=32, height=32, frames=4, batch=2)
    assert ours.shape == (8, 32, 32, 3)
    assert (ours - frames_of(reference)).abs().max() < TOLERANCE


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_partial_denoise_matches_video_to_video_reference(tiny_t2v, sampler):
    """denoise < 1 is diffusers' strength: the reference uses a 4-channel video ([B, F, C, h, w]) as latents."""
    model, clip, vae = tiny_t2v
    source = torch.randn(1, 4, 6, 6, 8, generator=generator(3))
    pipe = video2video_pipeline(*tiny_t2v, sampler)
    reference = pipe(PROMPT, video=source.permute(0, 2, 1, 3, 4), strength=0.6, negative_prompt=NEGATIVE, num_inference_steps=5,
                     guidance_scale=7.5, generator=generator(11), output_type="pt").frames
    raw = {"samples": source / model.latent_scale}  # LATENTs hold raw VAE latents, as in ComfyUI
    latent = T2VSampler().sample(model, encode(clip, PROMPT), encode(clip, NEGATIVE), raw, 11, 5, 7.5, sampler,
                                 "normal", 0.6)[0]
    ours = T2VVAEDecode().decode(vae, latent)[0]
    assert (ours - frames_of(reference)).abs().max() < TOLERANCE


def test_denoise_zero_returns_input_unchanged(tiny_t2v):
    model, clip, _vae = tiny_t2v
    source = torch.randn(1, 4, 3, 4, 4)
    out = T2VSampler().sample(model, encode(clip, PROMPT), encode(clip, ""), {"samples": source}, 0, 10, 7.5,
                              "ddim", "normal", 0.05)[0]
    assert torch.equal(out["samples"], source)


@pytest.mark.parametrize("sampler", [s for s in SAMPLER_NAMES if s not in ("ddim", "dpmpp_2m", "euler_ancestral",
                                                                            "unipc", "euler")])
def test_other_samplers_run_and_differ(tiny_t2v, sampler):
    ddim = render(tiny_t2v, sampler="ddim", frames=2, width=32, height=32)
    other = render(tiny_t2v, sampler=sampler, frames=2, width=32, height=32)
    assert torch.isfinite(other).all()
    assert (other - ddim).abs().max() > 1e-3


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "unipc", "euler_ancestral", "heun", "dpmpp_2m_sde"])
def test_split_run_equals_unsplit_run(tiny_t2v, sampler):
    model, clip, _vae = tiny_t2v
    positive, negative = encode(clip, PROMPT), encode(clip, NEGATIVE)
    empty = T2VEmptyLatentVideo().create(32, 32, 4, 1)[0]
    sampler_node = T2VSampler()
    whole = sampler_node.sample(model, positive, negative, empty, 5, 6, 7.5, sampler, "normal", 1.0)[0]
    first = sampler_node.sample(model, positive, negative, empty, 5, 6, 7.5, sampler, "normal", 1.0,
                                end_step=2, return_with_leftover_noise=True)[0]
    assert RESUME_KEY in first
    second = sampler_node.sample(model, positive, negative, first, 5, 6, 7.5, sampler, "normal", 1.0,
                                 start_step=2, add_noise=False)[0]
    assert RESUME_KEY not in second
    assert torch.equal(second["samples"], whole["samples"])


def test_split_without_state_starts_fresh(tiny_t2v):
    """A latent from elsewhere (no carried state) is continued by a fresh scheduler: it still runs."""
    model, clip, _vae = tiny_t2v
    positive, negative = encode(clip, PROMPT), encode(clip, NEGATIVE)
    empty = T2VEmptyLatentVideo().create(32, 32, 2, 1)[0]
    first = T2VSampler().sample(model, positive, negative, empty, 5, 6, 7.5, "dpmpp_2m", "normal", 1.0,
                                end_step=3, return_with_leftover_noise=True)[0]
    foreign = {"samples": first["samples"].clone()}
    resumed = T2VSampler().sample(model, positive, negative, first, 5, 6, 7.5, "dpmpp_2m", "normal", 1.0,
                                  start_step=3, add_noise=False)[0]
    fresh = T2VSampler().sample(model, positive, negative, foreign, 5, 6, 7.5, "dpmpp_2m", "normal", 1.0,
                                start_step=3, add_noise=False)[0]
    assert torch.isfinite(fresh["samples"]).all()
    assert not torch.equal(fresh["samples"], resumed["samples"])  # multistep history matters


def test_four_dimensional_latent_is_one_video(tiny_t2v):
    model, clip, _vae = tiny_t2v
    core_latent = {"samples": torch.randn(3, 4, 4, 4)}  # a core image batch: 3 frames
    out = T2VSampler().sample(model, encode(clip, PROMPT), encode(clip, ""), core_latent, 0, 2, 7.5, "ddim",
                              "normal", 0.5)[0]
    assert out["samples"].shape == (1, 4, 3, 4, 4)


def test_conditioning_width_mismatch_names_both_widths(tiny_t2v):
    model, clip, _vae = tiny_t2v
    wrong = [[torch.zeros(1, 77, 768), {}]]
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'positive'.*768.*32"):
        T2VSampler().sample(model, wrong, encode(clip, ""), T2VEmptyLatentVideo().create(32, 32, 2, 1)[0], 0, 2,
                            7.5, "ddim", "normal", 1.0)


def test_combined_conditioning_averages_predictions(tiny_t2v):
    """Core ConditioningCombine (two entries) averages; ConditioningConcat (longer tokens) runs."""
    model, clip, _vae = tiny_t2v
    a, b, negative = encode(clip, "a cat"), encode(clip, "a dog"), encode(clip, "")
    latent = T2VEmptyLatentVideo().create(32, 32, 2, 1)[0]
    combined = T2VSampler().sample(model, a + b, negative, latent, 3, 2, 7.5, "ddim", "normal", 1.0)[0]["samples"]
    only_a = T2VSampler().sample(model, a, negative, latent, 3, 2, 7.5, "ddim", "normal", 1.0)[0]["samples"]
    assert not torch.allclose(combined, only_a)
    concatenated = [[torch.cat([a[0][0], b[0][0]], dim=1), {}]]
    out = T2VSampler().sample(model, concatenated, negative, latent, 3, 2, 7.5, "ddim", "normal", 1.0)[0]
    assert torch.isfinite(out["samples"]).all()


def test_karras_refused_for_samplers_without_it(tiny_t2v):
    model, clip, _vae = tiny_t2v
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'scheduler'.*euler_ancestral.*Karras"):
        T2VSampler().sample(model, encode(clip, ""), encode(clip, ""), T2VEmptyLatentVideo().create(32, 32, 2, 1)[0],
                            0, 2, 7.5, "euler_ancestral", "karras", 1.0)


def test_pndm_refuses_partial_runs(tiny_t2v):
    model, clip, _vae = tiny_t2v
    with pytest.raises(NodeInputError, match=r"input 'sampler_name'.*whole schedule"):
        T2VSampler().sample(model, encode(clip, ""), encode(clip, ""), T2VEmptyLatentVideo().create(32, 32, 2, 1)[0],
                            0, 4, 7.5, "pndm", "normal", 0.5)


def test_empty_latent_size_must_be_multiple_of_eight():
    with pytest.raises(NodeInputError, match=r"T2VEmptyLatentVideo: input 'width': 100 is not a multiple of 8"):
        T2VEmptyLatentVideo().create(100, 64, 4, 1)


@pytest.mark.parametrize("frames_per_batch", [0, 1, 3])
def test_vae_chunking_does_not_change_results(tiny_t2v, frames_per_batch):
    _model, _clip, vae = tiny_t2v
    latent = {"samples": torch.randn(1, 4, 5, 4, 6, generator=generator(0))}
    whole = T2VVAEDecode().decode(vae, latent, frames_per_batch=0)[0]
    chunked = T2VVAEDecode().decode(vae, latent, frames_per_batch=frames_per_batch)[0]
    assert (whole - chunked).abs().max() < 1e-4
    encoded_whole = T2VVAEEncode().encode(vae, whole, frames_per_batch=0)[0]["samples"]
    encoded = T2VVAEEncode().encode(vae, whole, frames_per_batch=frames_per_batch)[0]["samples"]
    assert encoded.shape == (1, 4, 5, 4, 6)
    assert (encoded_whole - encoded).abs().max() < 1e-4


def test_empty_prompt_is_valid(tiny_t2v):
    _model, clip, _vae = tiny_t2v
    conditioning = encode(clip, "")
    assert conditioning[0][0].shape == (1, 77, 32)


def test_latents_are_raw_vae_latents_as_in_comfyui(tiny_t2v):
    """Core VAEEncode/VAEDecode and the pack's nodes exchange LATENTs without any scaling."""
    model, clip, vae = tiny_t2v
    frames = torch.rand(3, 32, 32, 3, generator=generator(2))
    encoded = T2VVAEEncode().encode(vae, frames)[0]["samples"]
    with torch.no_grad():
        core_encoded = vae.vae.encode(frames.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean
        assert (encoded[0].permute(1, 0, 2, 3) - core_encoded).abs().max() < 1e-5
        sampled = T2VSampler().sample(model, encode(clip, PROMPT), encode(clip, ""), {"samples": encoded}, 0, 4, 7.5,
                                      "ddim", "normal", 0.5)[0]["samples"]
        core_decoded = vae.vae.decode(sampled[0].permute(1, 0, 2, 3)).sample
    ours = T2VVAEDecode().decode(vae, {"samples": sampled})[0]
    assert (ours - (core_decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)).abs().max() < 1e-5


@pytest.mark.parametrize("change, message", [
    ({"steps": 7}, r"that run used sampler 'ddim', scheduler 'normal', 6 steps.*same settings"),
    ({"sampler_name": "unipc"}, r"that run used sampler 'ddim'.*same settings"),
])
def test_continuing_a_stopped_run_with_other_settings_is_refused(tiny_t2v, change, message):
    model, clip, _vae = tiny_t2v
    positive, negative = encode(clip, PROMPT), encode(clip, NEGATIVE)
    settings = {"seed": 5, "steps": 6, "cfg": 7.5, "sampler_name": "ddim", "scheduler": "normal", "denoise": 1.0}
    first = T2VSampler().sample(model, positive, negative, T2VEmptyLatentVideo().create(32, 32, 2, 1)[0], **settings,
                                end_step=2, return_with_leftover_noise=True)[0]
    with pytest.raises(NodeInputError, match=rf"T2VSampler: input 'latent': it comes from a sampler that stopped at "
                                             rf"step 2, but {message}"):
        T2VSampler().sample(model, positive, negative, first, **{**settings, **change}, start_step=2, add_noise=False)


def test_continuing_a_stopped_run_on_another_shape_is_refused(tiny_t2v):
    model, clip, _vae = tiny_t2v
    positive, negative = encode(clip, PROMPT), encode(clip, NEGATIVE)
    first = T2VSampler().sample(model, positive, negative, T2VEmptyLatentVideo().create(32, 32, 2, 1)[0], 5, 6, 7.5,
                                "dpmpp_2m", "normal", 1.0, end_step=2, return_with_leftover_noise=True)[0]
    upscaled = {**first, "samples": torch.nn.functional.interpolate(first["samples"], scale_factor=(1, 2, 2))}
    with pytest.raises(NodeInputError, match=r"input 'latent'.*shape \(1, 4, 2, 4, 4\), this one has \(1, 4, 2, 8, 8\); "
                                             r"a stopped run continues only on the same latent"):
        T2VSampler().sample(model, positive, negative, upscaled, 5, 6, 7.5, "dpmpp_2m", "normal", 1.0, start_step=2,
                            add_noise=False)


@pytest.mark.parametrize("start_step, end_step, message", [
    (6, 10000, r"input 'start_step': 6 is past the last step"),
    (3, 2, r"input 'end_step': 2 is before start_step 3"),
])
def test_step_ranges_that_run_nothing_by_mistake_are_refused(tiny_t2v, start_step, end_step, message):
    model, clip, _vae = tiny_t2v
    with pytest.raises(NodeInputError, match=rf"T2VSampler: {message}"):
        T2VSampler().sample(model, encode(clip, ""), encode(clip, ""), T2VEmptyLatentVideo().create(32, 32, 2, 1)[0],
                            0, 6, 7.5, "ddim", "normal", 1.0, start_step=start_step, end_step=end_step)


def test_a_zero_step_run_with_leftover_noise_returns_the_noised_input(tiny_t2v):
    """end_step = start_step = 0 only draws the starting noise (Text2Video-Zero with t1 = steps - 1)."""
    model, clip, _vae = tiny_t2v
    out = T2VSampler().sample(model, encode(clip, ""), encode(clip, ""), T2VEmptyLatentVideo().create(32, 32, 2, 1)[0],
                              3, 6, 7.5, "ddim", "normal", 1.0, end_step=0, return_with_leftover_noise=True)[0]
    expected = torch.randn(1, 4, 2, 4, 4, generator=generator(3)) / model.latent_scale
    assert RESUME_KEY in out
    assert (out["samples"] - expected).abs().max() < 1e-4


def test_every_sampler_has_an_independent_reference_scheduler():
    assert set(REFERENCE_SCHEDULERS) == set(SAMPLER_NAMES)


def test_cfg_below_one_ignores_the_negative_prompt(tiny_t2v):
    """What the tooltip promises: with cfg <= 1 another negative prompt changes nothing."""
    small = dict(frames=2, width=32, height=32, steps=3)
    assert torch.equal(render(tiny_t2v, cfg=0.5, negative="a", **small), render(tiny_t2v, cfg=0.5, negative="b", **small))


def test_ddim_eta_matches_the_reference_eta(tiny_t2v):
    pipe = text2video_pipeline(*tiny_t2v, "ddim")
    reference = pipe(PROMPT, negative_prompt=NEGATIVE, num_frames=4, height=32, width=32, num_inference_steps=4,
                     guidance_scale=7.5, eta=0.6, generator=generator(42), output_type="pt").frames
    ours = render(tiny_t2v, frames=4, width=32, height=32, eta=0.6)
    assert (ours - frames_of(reference)).abs().max() < TOLERANCE
    assert (ours - render(tiny_t2v, frames=4, width=32, height=32)).abs().max() > 10 * TOLERANCE  # eta changed it


class CleanEstimates:
    """Wraps a reference scheduler and keeps the clean (x0) estimate diffusers computes at each step."""

    def __init__(self, scheduler):
        self.estimates = []
        if hasattr(scheduler, "convert_model_output"):  # multistep solvers: x0 is their model output
            convert = scheduler.convert_model_output

            def keep(*args, **kwargs):
                self.estimates.append(convert(*args, **kwargs))
                return self.estimates[-1]

            scheduler.convert_model_output = keep
        else:
            step = scheduler.step

            def keep(*args, **kwargs):
                out = step(*args, **kwargs)
                self.estimates.append(out.pred_original_sample)
                return out

            scheduler.step = keep


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpmpp_2m"])
def test_a_v_prediction_run_stopped_early_returns_the_references_clean_estimate(tiny_t2v_v, sampler):
    """Stable Diffusion 2.x 768-style models predict v: a run stopped early shows diffusers' x0 for that step."""
    model, clip, vae = tiny_t2v_v
    assert model.scheduler_config["prediction_type"] == "v_prediction"
    pipe = text2video_pipeline(*tiny_t2v_v, sampler)
    recorder = CleanEstimates(pipe.scheduler)
    pipe(PROMPT, negative_prompt=NEGATIVE, num_frames=2, height=32, width=32, num_inference_steps=5,
         guidance_scale=7.5, generator=generator(4), output_type="latent")
    x0 = recorder.estimates[2]  # after 3 of 5 steps, [F, C, h, w]
    with torch.no_grad():
        expected = (vae.vae.decode(x0 / model.latent_scale).sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    latent = T2VSampler().sample(model, encode(clip, PROMPT), encode(clip, NEGATIVE),
                                 T2VEmptyLatentVideo().create(32, 32, 2, 1)[0], 4, 5, 7.5, sampler, "normal", 1.0,
                                 end_step=3)[0]
    assert RESUME_KEY not in latent
    ours = T2VVAEDecode().decode(vae, latent)[0]
    assert (ours - expected).abs().max() < TOLERANCE


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_a_v_prediction_model_matches_the_reference(tiny_t2v_v, sampler):
    pipe = text2video_pipeline(*tiny_t2v_v, sampler)
    reference = pipe(PROMPT, negative_prompt=NEGATIVE, num_frames=2, height=32, width=32, num_inference_steps=4,
                     guidance_scale=7.5, generator=generator(42), output_type="pt").frames
    ours = render(tiny_t2v_v, sampler=sampler, frames=2, width=32, height=32)
    assert (ours - frames_of(reference)).abs().max() < TOLERANCE
