"""The benchmarks' models, and how the pack and the diffusers reference pipelines are driven with them.

Mid-size random-weight models of the real architectures: the real block types, layers per block, attention
layout, VAE scale and scheduler, at a fifth of the UNet widths (tens of millions of parameters instead of
1.4 billion), a quarter of the VAE and text encoder widths. They are built deterministically and saved as
diffusers folders in the benchmark's temporary models folder, so every worker process loads the very same
weights with the pack's own loader (`load_model`, as `T2VModelLoader` does); the reference pipelines run on
the modules of those handles.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch

from comfyui_text2video import bridge
from comfyui_text2video.models.builtin import ensure_builtin
from comfyui_text2video.models.loading import load_model
from comfyui_text2video.nodes.conditioning import T2VTextEncode
from comfyui_text2video.nodes.latent import T2VEmptyLatentVideo
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.text2video_zero import T2VText2VideoZero
from comfyui_text2video.nodes.vae import T2VVAEDecode
from comfyui_text2video.samplers.schedulers import build_scheduler

import common

TEXT2VIDEO_MODEL = "benchmark-modelscope"
"""A ModelScope/zeroscope-layout 3D UNet (`model_name` in the benchmark's models folder)."""
IMAGE_MODEL = "benchmark-sd15"
"""A Stable Diffusion 1.5-layout 2D UNet, for Text2Video-Zero."""
INSTRUCT_PIX2PIX_MODEL = "benchmark-ip2p"
"""The same layout with InstructPix2Pix's 8 input channels, for Video InstructPix2Pix."""

PROMPT = "a red panda eating bamboo in the rain, cinematic"
NEGATIVE_PROMPT = "blurry, low quality, watermark"

UNET_WIDTHS = (64, 128, 256, 256)  # real: 320, 640, 1280, 1280
VAE_WIDTHS = (32, 64, 128, 128)  # real: 128, 256, 512, 512
ATTENTION_HEADS = 8
BUILD_SEED = 20240601

_SCHEDULER_CONFIG = {  # ModelScope's and Stable Diffusion 1.5's noise schedule
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}


def _unet3d(text_width: int) -> torch.nn.Module:
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=UNET_WIDTHS,
        down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
        up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
        cross_attention_dim=text_width, attention_head_dim=ATTENTION_HEADS, norm_num_groups=32)


def _unet2d(text_width: int, in_channels: int = 4) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64, in_channels=in_channels, out_channels=4, layers_per_block=2, block_out_channels=UNET_WIDTHS,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=text_width, attention_head_dim=ATTENTION_HEADS, norm_num_groups=32)


def _vae(scaling_factor: float = 0.18215) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
        block_out_channels=VAE_WIDTHS, down_block_types=("DownEncoderBlock2D",) * len(VAE_WIDTHS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_WIDTHS), sample_size=256, scaling_factor=scaling_factor)


def _text_encoder(tokenizer, width: int, class_name: str = "CLIPTextModel") -> torch.nn.Module:
    import transformers
    from transformers import CLIPTextConfig

    return getattr(transformers, class_name)(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width, num_hidden_layers=4,
        num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length, projection_dim=width,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))


@dataclasses.dataclass(frozen=True)
class Recipe:
    pipeline: str
    unet_class: str
    unet: Callable[[int], torch.nn.Module]  # text width -> UNet
    text_width: int  # real: 1024 (ModelScope), 768 (SD 1.5)
    scheduler: str


RECIPES = {
    TEXT2VIDEO_MODEL: Recipe("TextToVideoSDPipeline", "UNet3DConditionModel", _unet3d, 256, "DDIMScheduler"),
    IMAGE_MODEL: Recipe("StableDiffusionPipeline", "UNet2DConditionModel", _unet2d, 192, "PNDMScheduler"),
    INSTRUCT_PIX2PIX_MODEL: Recipe("StableDiffusionInstructPix2PixPipeline", "UNet2DConditionModel",
                                   functools.partial(_unet2d, in_channels=8), 192, "EulerAncestralDiscreteScheduler"),
}


def _randomize_zero_weights(model: torch.nn.Module) -> None:
    """Give zero-initialised weight matrices (the temporal convolutions' last layers) small random values,
    so that every path of the model shapes the output the two sides are compared on."""
    for parameter in model.parameters():
        if parameter.ndim >= 2 and not parameter.any():
            parameter.data.normal_(0.0, 0.5 / parameter[0].numel() ** 0.5)


def _copy_builtin_tokenizer(target: Path, builtin: str = "tiny-text2video", component: str = "tokenizer") -> None:
    """A built-in tiny model's CLIP tokenizer (character-level BPE, 77 tokens; SDXL's second one pads with "!")."""
    with tempfile.TemporaryDirectory() as cache:
        shutil.copytree(ensure_builtin(builtin, Path(cache)) / component, target)


def save_model(name: str, data_dir: Path) -> str:
    """Build model `name` deterministically, save it as a diffusers folder in `data_dir`'s models folder and
    describe it."""
    from transformers import CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    recipe = RECIPES[name]
    folder = data_dir / "models" / bridge.MODEL_FOLDER / name
    _copy_builtin_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BUILD_SEED)
        components = {"unet": recipe.unet(recipe.text_width), "vae": _vae(),
                      "text_encoder": _text_encoder(tokenizer, recipe.text_width)}
        for module in components.values():
            _randomize_zero_weights(module)
    index = {"_class_name": recipe.pipeline, "unet": ["diffusers", recipe.unet_class],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", recipe.scheduler]}
    save_pipeline(folder, components, {"_class_name": recipe.scheduler, **_SCHEDULER_CONFIG}, index)
    return describe(name, components)


def save_pipeline(folder: Path, components: dict[str, torch.nn.Module], scheduler: dict, index: dict) -> None:
    """Built `components` as a diffusers pipeline folder, with the scheduler's config and `model_index.json`."""
    for component, module in components.items():
        module.save_pretrained(folder / component, safe_serialization=True)
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=1))
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))


def describe(name: str, components: dict[str, torch.nn.Module]) -> str:
    """`model NAME: unet 56.7M parameters, ...`: each component's size."""
    return f"model {name}: " + ", ".join(f"{component} {sum(p.numel() for p in module.parameters()) / 1e6:.1f}M "
                                         "parameters" for component, module in components.items())


def mid_size(name: str) -> common.Models:
    """Model `name` of `RECIPES` for a benchmark: built by `save_model`, loaded with the pack's loader."""
    return common.Models(lambda data_dir: [save_model(name, data_dir)], lambda: load_model(name, "float32"))


# --------------------------------------------------------------------------- driving both sides


def pack_conditioning(clip) -> tuple[list, list]:
    """The prompt and the negative prompt through `T2VTextEncode`."""
    encode = T2VTextEncode().encode
    return encode(clip, PROMPT)[0], encode(clip, NEGATIVE_PROMPT)[0]


def text_to_video(handles, probe: common.Probe, settings: common.VideoSettings) -> torch.Tensor:
    """The pack's text-to-video graph: `T2VTextEncode` x2 -> `T2VEmptyLatentVideo` -> `T2VSampler` ->
    `T2VVAEDecode` (default `frames_per_batch`)."""
    model, clip, vae = handles
    with probe.stage("T2VTextEncode x2"):
        positive, negative = pack_conditioning(clip)
    with probe.stage("T2VSampler"):
        latent = T2VEmptyLatentVideo().create(settings.width, settings.height, settings.frames, 1)[0]
        latent = T2VSampler().sample(model, positive, negative, latent, settings.seed, settings.steps, settings.cfg,
                                     settings.sampler, "normal", 1.0)[0]
    with probe.stage("T2VVAEDecode"):
        return T2VVAEDecode().decode(vae, latent)[0]


def text2video_zero(handles, probe: common.Probe, settings) -> torch.Tensor:
    """The pack's Text2Video-Zero graph: `T2VTextEncode` x2 -> `T2VText2VideoZero` -> `T2VVAEDecode` (default
    `frames_per_batch`); `settings` are `VideoSettings` with `motion`, `t0`, `t1` and `chunk_size`."""
    model, clip, vae = handles
    with probe.stage("T2VTextEncode x2"):
        positive, negative = pack_conditioning(clip)
    with probe.stage("T2VText2VideoZero"):
        latent = T2VText2VideoZero().generate(
            model, positive, negative, settings.seed, settings.steps, settings.cfg, settings.sampler, "normal",
            settings.width, settings.height, settings.frames, settings.motion, settings.motion, settings.t0,
            settings.t1, settings.chunk_size)[0]
    with probe.stage("T2VVAEDecode"):
        return T2VVAEDecode().decode(vae, latent)[0]


def reference_pipeline(pipeline_class, handles, sampler_name: str, **components):
    """A diffusers pipeline of `pipeline_class` on the modules of the pack's handles, with the pack's scheduler."""
    model, clip, vae = handles
    pipe = pipeline_class(vae=vae.vae, text_encoder=clip.text_encoder, tokenizer=clip.tokenizer, unet=model.unet,
                          scheduler=build_scheduler(sampler_name, "normal", model.scheduler_config), **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference_frames(video: torch.Tensor) -> torch.Tensor:
    """A video pipeline's `output_type="pt"` frames `[B, F, 3, H, W]` in the `IMAGE` layout `[B*F, H, W, 3]`."""
    return video.flatten(0, 1).permute(0, 2, 3, 1)


def reference_video(pipe, settings: common.VideoSettings, **inputs) -> torch.Tensor:
    """A video pipeline's call on the prompts, `settings` and `inputs`, its frames in the `IMAGE` layout."""
    video = pipe(PROMPT, negative_prompt=NEGATIVE_PROMPT, num_frames=settings.frames, height=settings.height,
                 width=settings.width, num_inference_steps=settings.steps, guidance_scale=settings.cfg,
                 generator=seeded(settings.seed), output_type="pt", **inputs).frames
    return reference_frames(video)


def seeded(seed: int) -> torch.Generator:
    """The CPU generator both sides draw from (the pack seeds its own the same way)."""
    return torch.Generator("cpu").manual_seed(seed)
