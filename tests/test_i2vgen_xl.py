"""I2VGen-XL: an image and a prompt through T2VI2VGenXLConditioning -> T2VSampler -> T2VVAEDecode against
I2VGenXLPipeline, and the refusals around it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from reference_pipelines import frames_of, generator, reference_scheduler

from comfyui_text2video.errors import NodeInputError
from comfyui_text2video.nodes.conditioning import T2VTextEncode
from comfyui_text2video.nodes.i2vgen_xl import T2VI2VGenXLConditioning
from comfyui_text2video.nodes.latent import T2VEmptyLatentVideo
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.vae import T2VVAEDecode

PROMPT, NEGATIVE = "a panda dancing", "ugly"
WIDTH, HEIGHT, FRAMES, FPS = 48, 32, 4, 12


@pytest.fixture(scope="session")
def tiny_i2vgen(data_dir):
    from comfyui_text2video.models.loading import load_model

    return load_model("builtin:tiny-i2vgen-xl", "float32")


def picture() -> torch.Tensor:
    """An IMAGE `[1, 40, 56, 3]` of another size and aspect than the video: colour ramps."""
    y = torch.linspace(0, 1, 40).view(-1, 1, 1)
    x = torch.linspace(0, 1, 56).view(1, -1, 1)
    return torch.cat([x.expand(40, 56, 1), y.expand(40, 56, 1), (x * y).expand(40, 56, 1)], dim=-1).unsqueeze(0)


def encode(clip, text):
    return T2VTextEncode().encode(clip, text)[0]


def reference(handles, image, *, sampler, steps, cfg, seed):
    from diffusers import I2VGenXLPipeline
    from PIL import Image

    model, clip, vae = handles
    (tokenizer, text_encoder), (feature_extractor, image_encoder) = clip.encoders
    pipe = I2VGenXLPipeline(vae=vae.vae, text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=image_encoder,
                            feature_extractor=feature_extractor, unet=model.unet,
                            scheduler=reference_scheduler(sampler, "normal", model.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    pil = Image.fromarray((image[0] * 255).round().to(torch.uint8).numpy())
    nested = not hasattr(text_encoder, "text_model")
    if nested:  # the pipeline reads `text_model.final_layer_norm`, which transformers 5 no longer nests
        object.__setattr__(text_encoder, "text_model", SimpleNamespace(final_layer_norm=text_encoder.final_layer_norm))
    torch.manual_seed(seed)  # the pipeline draws the image's posterior sample from the global generator
    try:
        video = pipe(PROMPT, image=pil, height=HEIGHT, width=WIDTH, target_fps=FPS, num_frames=FRAMES,
                     num_inference_steps=steps, guidance_scale=cfg, negative_prompt=NEGATIVE,
                     generator=generator(seed), output_type="pt").frames
    finally:
        if nested:
            object.__delattr__(text_encoder, "text_model")
    return frames_of(video)


def graph(handles, image, *, sampler, steps, cfg, seed):
    model, clip, vae = handles
    positive, negative, latent = T2VI2VGenXLConditioning().encode(encode(clip, PROMPT), encode(clip, NEGATIVE), clip,
                                                                  vae, image, WIDTH, HEIGHT, FRAMES, FPS, seed)
    out = T2VSampler().sample(model, positive, negative, latent, seed, steps, cfg, sampler, "normal", 1.0)[0]
    return T2VVAEDecode().decode(vae, out)[0]


@pytest.mark.parametrize("sampler, steps, cfg", [("ddim", 3, 9.0), ("euler_ancestral", 3, 7.0), ("dpmpp_2m", 2, 9.0),
                                                 ("unipc", 2, 1.0)])
def test_image_to_video_equals_i2vgen_xl_pipeline(tiny_i2vgen, sampler, steps, cfg):
    image = picture()
    expected = reference(tiny_i2vgen, image, sampler=sampler, steps=steps, cfg=cfg, seed=3)
    ours = graph(tiny_i2vgen, image, sampler=sampler, steps=steps, cfg=cfg, seed=3)
    assert ours.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert (ours - expected).abs().max() < 1e-3


def test_the_image_shapes_the_video(tiny_i2vgen):
    first = graph(tiny_i2vgen, picture(), sampler="ddim", steps=2, cfg=9.0, seed=3)
    other = graph(tiny_i2vgen, picture().flip(2), sampler="ddim", steps=2, cfg=9.0, seed=3)
    assert (first - other).abs().max() > 2e-3  # far above the 1e-6 of the parity tests (random tiny weights)


def test_a_plain_prompt_is_refused_by_an_i2vgen_xl_model(tiny_i2vgen):
    model, clip, _vae = tiny_i2vgen
    latent = T2VEmptyLatentVideo().create(WIDTH, HEIGHT, FRAMES, 1)[0]
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'positive': an I2VGen-XL model animates an image.*"
                                             r"T2VI2VGenXLConditioning"):
        T2VSampler().sample(model, encode(clip, PROMPT), encode(clip, NEGATIVE), latent, 0, 2, 9.0, "ddim", "normal",
                            1.0)


def test_images_of_the_wrong_kind_are_refused(tiny_i2vgen):
    _model, clip, vae = tiny_i2vgen
    positive, negative = encode(clip, PROMPT), encode(clip, NEGATIVE)
    node = T2VI2VGenXLConditioning()
    with pytest.raises(NodeInputError, match=r"T2VI2VGenXLConditioning: input 'image': got a batch of 2 images.*"
                                             r"ImageFromBatch"):
        node.encode(positive, negative, clip, vae, picture().repeat(2, 1, 1, 1), WIDTH, HEIGHT, FRAMES, FPS, 0)
    with pytest.raises(NodeInputError, match=r"T2VI2VGenXLConditioning: input 'image': expected IMAGE frames "
                                             r"\[N, H, W, 3\]"):
        node.encode(positive, negative, clip, vae, torch.zeros(1, 40, 56, 4), WIDTH, HEIGHT, FRAMES, FPS, 0)
    with pytest.raises(NodeInputError, match=r"T2VI2VGenXLConditioning: input 'width': 44 is not a multiple of 8"):
        node.encode(positive, negative, clip, vae, picture(), 44, HEIGHT, FRAMES, FPS, 0)


def test_the_clip_of_another_model_is_refused(tiny_i2vgen, tiny_t2v):
    _model, clip, vae = tiny_i2vgen
    with pytest.raises(NodeInputError, match=r"T2VI2VGenXLConditioning: input 'clip': .*connect the clip output of "
                                             r"an I2VGen-XL model"):
        T2VI2VGenXLConditioning().encode(encode(clip, PROMPT), encode(clip, NEGATIVE), tiny_t2v[1], vae, picture(),
                                         WIDTH, HEIGHT, FRAMES, FPS, 0)


def test_i2vgen_xl_conditioning_on_another_model_is_refused(tiny_i2vgen, tiny_t2v):
    _model, clip, vae = tiny_i2vgen
    positive, negative, latent = T2VI2VGenXLConditioning().encode(encode(clip, PROMPT), encode(clip, NEGATIVE), clip,
                                                                  vae, picture(), 32, 32, 2, FPS, 0)
    model = tiny_t2v[0]
    with pytest.raises(NodeInputError, match=r"T2VSampler: input 'positive': it is I2VGen-XL image conditioning .*"
                                             r"3D-UNet text-to-video"):
        T2VSampler().sample(model, positive, negative, latent, 0, 2, 9.0, "ddim", "normal", 1.0)


def test_context_windows_are_refused_for_i2vgen_xl(tiny_i2vgen):
    from comfyui_text2video.nodes.long_video import T2VContextWindows

    with pytest.raises(NodeInputError, match=r"T2VContextWindows: input 'model': .*I2VGen-XL .*context windows do not "
                                             r"run it"):
        T2VContextWindows().patch(tiny_i2vgen[0], 8, 2, "standard_static", "pyramid")
