"""ControlNet video (the Text2Video-Zero ControlNet recipe) against StableDiffusionControlNetPipeline."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from reference_pipelines import generator, reference_scheduler, sdxl_modules
from test_text2video_zero import NEGATIVE, PROMPT, decode, encode

from comfyui_text2video.errors import NodeInputError
from comfyui_text2video.models.builtin import _activate_zero_layers
from comfyui_text2video.models.controlnet import ControlNetHandle, load_controlnet
from comfyui_text2video.nodes.controlnet import T2VApplyControlNet, T2VControlNetLoader
from comfyui_text2video.nodes.latent import T2VEmptyLatentVideo
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.text2video_zero import T2VCrossFrameAttention

WIDTH, HEIGHT, FRAMES = 64, 48, 3


@pytest.fixture(scope="session")
def tiny_controlnet(data_dir):
    return T2VControlNetLoader().load("builtin:tiny-controlnet")[0]


@pytest.fixture(scope="module")
def reactive_controlnet(tiny_controlnet):
    """The tiny ControlNet with a control-image encoder that passes its image on (He-scaled random weights, gain 4).
    The built-in's random encoder flattens what it sees: its control frames change the video's frames by ~1e-5, too
    little for a parity test to notice a frame getting another frame's control image."""
    module = copy.deepcopy(tiny_controlnet.module)
    encoder = module.controlnet_cond_embedding
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for conv in (encoder.conv_in, *encoder.blocks, encoder.conv_out):
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (4 / conv.weight[0].numel()) ** 0.5)
    return ControlNetHandle("reactive", module, tiny_controlnet.device)


def control_frames(frames=FRAMES, seed=0):
    """Edge-like control frames that differ from frame to frame: a bright bar moving right."""
    images = torch.zeros(frames, HEIGHT, WIDTH, 3)
    for i in range(frames):
        images[i, :, 8 + 12 * i:14 + 12 * i] = 1.0
    return images


@contextlib.contextmanager
def cross_frame_processors(*modules):
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
        CrossFrameAttnProcessor2_0)

    originals = [module.attn_processors for module in modules]
    for module in modules:
        module.set_attn_processor(CrossFrameAttnProcessor2_0(batch_size=2))
    try:
        yield
    finally:
        for module, processors in zip(modules, originals):
            module.set_attn_processor(processors)


def reference(handles, controlnet, images, *, sampler, steps, strength=1.0, start=0.0, end=1.0, seed=7):
    """diffusers' ControlNet pipeline for the model (SD or SDXL) with the Text2Video-Zero processors; `controlnet`,
    `images`, `strength`, `start` and `end` may be lists (a MultiControlNetModel, per-ControlNet windows)."""
    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline

    model, clip, vae = handles
    several = isinstance(controlnet, list)
    controlnets, videos = (controlnet, images) if several else ([controlnet], [images])
    modules = [c.module for c in controlnets]
    control_images = [video.permute(0, 3, 1, 2) for video in videos]
    if model.family.name == "sdxl":
        pipe = StableDiffusionXLControlNetPipeline(**sdxl_modules(*handles, sampler_name=sampler),
                                                   controlnet=modules if several else modules[0])
    else:
        pipe = StableDiffusionControlNetPipeline(
            vae=vae.vae, text_encoder=clip.text_encoder, tokenizer=clip.tokenizer, unet=model.unet,
            controlnet=modules if several else modules[0],
            scheduler=reference_scheduler(sampler, "normal", model.scheduler_config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    frames = videos[0].shape[0]
    gen = generator(seed)
    latents = torch.randn((1, 4, HEIGHT // 8, WIDTH // 8), generator=gen).repeat(frames, 1, 1, 1)
    with cross_frame_processors(model.unet, *modules):
        video = pipe(prompt=[PROMPT] * frames, negative_prompt=[NEGATIVE] * frames,
                     image=control_images if several else control_images[0], latents=latents, generator=gen,
                     num_inference_steps=steps, guidance_scale=7.5, controlnet_conditioning_scale=strength,
                     control_guidance_start=start, control_guidance_end=end, output_type="pt").images
    return torch.as_tensor(video).permute(0, 2, 3, 1)


def positive_only(handle):
    """A copy of the ControlNet whose residuals are zero for the negative half of the reference's batch
    (`[negative frames, positive frames]`): what it does when the sampler's negative does not carry it."""
    module = copy.deepcopy(handle.module)
    forward = module.forward

    def forward_on_positive_rows(sample, *args, **kwargs):
        down, mid = forward(sample, *args, **kwargs)
        keep = (torch.arange(sample.shape[0]) >= sample.shape[0] // 2).to(sample.dtype).view(-1, 1, 1, 1)
        return [r * keep for r in down], mid * keep

    module.forward = forward_on_positive_rows
    return ControlNetHandle(handle.name, module, handle.device)


def graph(handles, controls, *, sampler, steps, frames=FRAMES, seed=7, frame_noise="shared", positive_only=()):
    """loader -> encode -> apply ControlNet(s) -> cross-frame attention -> T2VSampler -> decode. The ControlNets at
    the indices in `positive_only` are applied to the positive alone (the sampler gets the negative without them)."""
    model, clip, _vae = handles
    positive, negative = encode(clip, PROMPT), encode(clip, NEGATIVE)
    for index, (controlnet, images, strength, start, end) in enumerate(controls):
        positive, controlled = T2VApplyControlNet().apply(positive, negative, controlnet, images, strength, start, end)
        negative = negative if index in positive_only else controlled
    latent = T2VEmptyLatentVideo().create(WIDTH, HEIGHT, frames, 1)[0]
    patched = T2VCrossFrameAttention().patch(model)[0]
    out = T2VSampler().sample(patched, positive, negative, latent, seed, steps, 7.5, sampler, "normal", 1.0,
                              frame_noise=frame_noise)[0]
    return decode(handles, out)


@pytest.mark.parametrize("sampler, steps, strength, start, end", [
    ("ddim", 4, 1.0, 0.0, 1.0),
    ("euler_ancestral", 4, 0.7, 0.0, 1.0),
    ("dpmpp_2m", 5, 1.3, 0.2, 0.8),
])
def test_controlnet_graph_equals_the_seed_recipe(tiny_sd, tiny_controlnet, sampler, steps, strength, start, end):
    images = control_frames()
    expected = reference(tiny_sd, tiny_controlnet, images, sampler=sampler, steps=steps, strength=strength,
                         start=start, end=end)
    ours = graph(tiny_sd, [(tiny_controlnet, images, strength, start, end)], sampler=sampler, steps=steps)
    assert (ours - expected).abs().max() < 1e-3
    uncontrolled = graph(tiny_sd, [(tiny_controlnet, images, 0.0, 0.0, 1.0)], sampler=sampler, steps=steps)
    assert (ours - uncontrolled).abs().max() > 1e-2  # the control frames change the video


def test_each_frame_follows_its_own_control_frame_as_in_the_seed_recipe(tiny_sd, reactive_controlnet):
    images = control_frames()
    ours = graph(tiny_sd, [(reactive_controlnet, images, 1.0, 0.0, 1.0)], sampler="ddim", steps=4)
    expected = reference(tiny_sd, reactive_controlnet, images, sampler="ddim", steps=4)
    assert (ours - expected).abs().max() < 1e-3
    assert min((ours[i] - ours[0]).abs().max() for i in range(1, FRAMES)) > 0.05  # same noise, own control frame


def test_two_controlnets_with_their_own_step_windows_equal_a_multi_controlnet(tiny_sd, tiny_controlnet,
                                                                             reactive_controlnet):
    images, reversed_images = control_frames(), control_frames().flip(0)
    # the first stops half-way, the second starts half-way: each step has one of them, never both
    windows = [(reactive_controlnet, images, 1.0, 0.0, 0.5), (tiny_controlnet, reversed_images, 0.8, 0.5, 1.0)]
    ours = graph(tiny_sd, windows, sampler="ddim", steps=4)
    expected = reference(tiny_sd, [reactive_controlnet, tiny_controlnet], [images, reversed_images], sampler="ddim",
                         steps=4, strength=[1.0, 0.8], start=[0.0, 0.5], end=[0.5, 1.0])
    assert (ours - expected).abs().max() < 1e-3
    first_only = graph(tiny_sd, windows[:1], sampler="ddim", steps=4)
    assert (ours - first_only).abs().max() > 1e-2  # the second ControlNet's steps count


def test_a_controlnet_on_the_positive_alone_leaves_the_negative_prediction_uncontrolled(tiny_sd, tiny_controlnet,
                                                                                       reactive_controlnet):
    images = control_frames()
    ours = graph(tiny_sd, [(reactive_controlnet, images, 1.0, 0.0, 1.0)], sampler="ddim", steps=3, positive_only={0})
    expected = reference(tiny_sd, positive_only(reactive_controlnet), images, sampler="ddim", steps=3)
    assert (ours - expected).abs().max() < 1e-3
    both = graph(tiny_sd, [(reactive_controlnet, images, 1.0, 0.0, 1.0)], sampler="ddim", steps=3)
    assert (ours - both).abs().max() > 1e-2
    # with a second ControlNet on both branches, the one-sided residuals add to the shared ones
    mixed = graph(tiny_sd, [(reactive_controlnet, images, 1.0, 0.0, 1.0), (tiny_controlnet, images, 0.7, 0.0, 1.0)],
                  sampler="ddim", steps=3, positive_only={0})
    expected = reference(tiny_sd, [positive_only(reactive_controlnet), tiny_controlnet], [images, images],
                         sampler="ddim", steps=3, strength=[1.0, 0.7])
    assert (mixed - expected).abs().max() < 1e-3


def test_an_sdxl_controlnet_equals_the_sdxl_controlnet_pipeline(tiny_sdxl):
    """An SDXL ControlNet takes the pooled text embedding and time ids too (its `added_cond_kwargs`)."""
    from diffusers import ControlNetModel

    model, _clip, _vae = tiny_sdxl
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = ControlNetModel.from_unet(model.unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
        _activate_zero_layers(module)
    controlnet = ControlNetHandle("sdxl-controlnet", module.eval(), model.device)
    images = control_frames()
    ours = graph(tiny_sdxl, [(controlnet, images, 0.9, 0.0, 1.0)], sampler="euler", steps=3)
    expected = reference(tiny_sdxl, controlnet, images, sampler="euler", steps=3, strength=0.9)
    assert (ours - expected).abs().max() < 1e-3
    uncontrolled = graph(tiny_sdxl, [(controlnet, images, 0.0, 0.0, 1.0)], sampler="euler", steps=3)
    assert (ours - uncontrolled).abs().max() > 1e-2
    half = ControlNetHandle("sdxl-controlnet-bf16", copy.deepcopy(module).to(torch.bfloat16), model.device)
    assert (graph(tiny_sdxl, [(half, images, 0.9, 0.0, 1.0)], sampler="euler", steps=3) - ours).abs().max() < 0.05


def test_one_control_frame_serves_every_frame_and_two_controlnets_stack(tiny_sd, tiny_controlnet):
    images = control_frames()
    one = graph(tiny_sd, [(tiny_controlnet, images[:1], 1.0, 0.0, 1.0)], sampler="ddim", steps=3)
    repeated = graph(tiny_sd, [(tiny_controlnet, images[:1].repeat(FRAMES, 1, 1, 1), 1.0, 0.0, 1.0)],
                     sampler="ddim", steps=3)
    assert (one - repeated).abs().max() < 1e-5
    stacked = graph(tiny_sd, [(tiny_controlnet, images, 0.5, 0.0, 1.0), (tiny_controlnet, images, 0.5, 0.0, 1.0)],
                    sampler="ddim", steps=3)
    single = graph(tiny_sd, [(tiny_controlnet, images, 1.0, 0.0, 1.0)], sampler="ddim", steps=3)
    assert (stacked - single).abs().max() < 1e-4  # residuals add up: two halves make one whole


@pytest.mark.parametrize("model_dtype, controlnet_dtype", [("float32", torch.bfloat16), ("bfloat16", torch.float32)])
def test_a_controlnet_in_another_dtype_than_the_model_works_in_its_own(tiny_sd, reactive_controlnet, model_dtype,
                                                                      controlnet_dtype):
    # e.g. a half-precision ControlNet with a float32 model: its inputs are cast to its dtype, its residuals back
    from comfyui_text2video.models.loading import load_model

    handles = tiny_sd if model_dtype == "float32" else load_model("builtin:tiny-sd15", model_dtype)
    other = ControlNetHandle("other", copy.deepcopy(reactive_controlnet.module).to(controlnet_dtype),
                             reactive_controlnet.device)
    images = control_frames()
    ours = graph(handles, [(other, images, 1.0, 0.0, 1.0)], sampler="ddim", steps=2)
    full = graph(tiny_sd, [(reactive_controlnet, images, 1.0, 0.0, 1.0)], sampler="ddim", steps=2)
    assert (ours - full).abs().max() < 0.05


def test_control_frames_of_another_count_are_refused(tiny_sd, tiny_controlnet):
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'latent'.*2 control frames but the video has 3"):
        graph(tiny_sd, [(tiny_controlnet, control_frames(2), 1.0, 0.0, 1.0)], sampler="ddim", steps=2)


def test_a_controlnet_for_another_model_is_refused(tiny_sdxl, tiny_controlnet):
    with pytest.raises(NodeInputError, match=r"input 'positive'.*ControlNet 'builtin:tiny-controlnet' has "
                                             r"cross_attention_dim 32 but the model 'builtin:tiny-sdxl' has 64"):
        graph(tiny_sdxl, [(tiny_controlnet, control_frames(), 1.0, 0.0, 1.0)], sampler="ddim", steps=2)


def test_frame_noise_on_a_text_to_video_model_is_refused(tiny_t2v):
    model, clip, _vae = tiny_t2v
    latent = T2VEmptyLatentVideo().create(WIDTH, HEIGHT, 2, 1)[0]
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'frame_noise'.*use per_video"):
        T2VSampler().sample(model, encode(clip, PROMPT), encode(clip, NEGATIVE), latent, 0, 2, 7.5, "ddim",
                            "normal", 1.0, frame_noise="shared")


def test_the_cross_frame_patch_leaves_the_controlnet_as_it_was(tiny_sd, tiny_controlnet):
    before = dict(tiny_controlnet.module.attn_processors)
    graph(tiny_sd, [(tiny_controlnet, control_frames(), 1.0, 0.0, 1.0)], sampler="ddim", steps=2)
    assert tiny_controlnet.module.attn_processors == before


def test_an_unknown_controlnet_names_the_folder(data_dir):
    with pytest.raises(NodeInputError, match=r"T2VControlNetLoader: input 'controlnet_name'.*no ControlNet named"):
        T2VControlNetLoader().load("missing")
    assert load_controlnet("builtin:tiny-controlnet") is load_controlnet("builtin:tiny-controlnet")
