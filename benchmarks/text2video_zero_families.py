"""Benchmark: Text2Video-Zero on SDXL, ControlNet video and Video InstructPix2Pix against their diffusers references.

Each path of the pack against the reference recipe on the same modules of mid-size random-weight models
(`models.py`: the real block types at a fifth of the UNet widths), the same prompts, inputs, seed, steps and
sampler: time and peak memory (medians, pack / reference) and the largest difference between the outputs
(pixels in 0..1).

1. `sdxl`: `T2VTextEncode` x2 -> `T2VText2VideoZero` -> `T2VVAEDecode` against `TextToVideoZeroSDXLPipeline`
   (`add_watermarker=False`) on an SDXL-layout model (two text encoders, pooled embedding and time ids, the
   real transformer depth per level shortened from 1, 2, 10 to 1, 2, 4).
2. `controlnet`: `T2VTextEncode` x2 -> `T2VApplyControlNet` -> `T2VCrossFrameAttention` ->
   `T2VSampler(frame_noise=shared)` -> `T2VVAEDecode` against `StableDiffusionControlNetPipeline` with
   `CrossFrameAttnProcessor2_0(batch_size=2)` on UNet and ControlNet and one noise image repeated over the
   frames (Text2Video-Zero's ControlNet recipe); the control frames are edge pictures of a square that moves
   every frame; a ControlNet of the SD 1.5-layout model's size.
3. `ip2p`: `T2VInstructPix2PixConditioning` -> `T2VCrossFrameAttention` -> `T2VSampler(frame_noise=per_frame)`
   -> `T2VVAEDecode` against `StableDiffusionInstructPix2PixPipeline` with `CrossFrameAttnProcessor2_0(batch_size=3)`
   (Video InstructPix2Pix), on an SD 1.5-layout model with 8 input channels.
4. `ip2p-chunked`: memory with the video's length: the same pack graph on a long clip in chunks of
   `--chunk-size` frames (frame 0 and the next ones, the first output frame of every later chunk dropped, as the
   README tells) against a short clip in one chunk. The goal is a flat peak (within 1.3x).

Method as in `text2video.py` (details in `common.py`): each measured call in a fresh process after a small
warm-up, variants alternating, medians; peak memory above what was in use before the call, on CPU as the
RSS peak with glibc's allocator as it comes and as the live peak (glibc returning freed blocks at once).

Measured (2 cores shared with other work at a load of 7-9, 1 torch thread, float32, 8 frames 128x128, cfg 7.5, ddim,
3 rounds; pack / reference, medians):

    path                    wall time  CPU time  RSS peak  live peak  outputs: max abs difference
    sdxl (12 steps)              1.10      1.02      0.91       0.95  1.4e-06
    controlnet (10 steps)        1.26      0.92      0.98       0.89  1.6e-06
    ip2p (10 steps)              1.34      1.04      0.98       0.96  1.6e-06
    ip2p-chunked: 32 frames in chunks of 8 / 8 frames: RSS peak 1.08, live peak 1.06 (CPU time 4.41, 5 chunks)

At that load a process got 20-40% of a core, so the wall times scatter (the fastest-run ratios were 0.99, 1.73
and 1.20); the CPU times are the figure to read. The same InstructPix2Pix calls alternated in one process
(3 steps) took 33.0 s (pack) and 41.5 s (reference) wall, medians of three, at about equal CPU time (7.2 s).

Run: `python benchmarks/text2video_zero_families.py` (about 55 minutes on a busy 2-core machine; `--paths sdxl ip2p`
runs some of them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path

import torch

from comfyui_text2video import bridge
from comfyui_text2video.models.controlnet import load_controlnet
from comfyui_text2video.models.loading import load_model
from comfyui_text2video.nodes.conditioning import T2VTextEncode
from comfyui_text2video.nodes.controlnet import T2VApplyControlNet
from comfyui_text2video.nodes.instruct_pix2pix import T2VInstructPix2PixConditioning
from comfyui_text2video.nodes.latent import T2VEmptyLatentVideo
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.text2video_zero import T2VCrossFrameAttention
from comfyui_text2video.nodes.vae import T2VVAEDecode

import common
import models

SDXL_MODEL = "benchmark-sdxl"
CONTROLNET = "benchmark-controlnet"
INSTRUCTION = "make it look like a snowy winter evening"

SDXL_WIDTHS = (64, 128, 256)  # real: 320, 640, 1280
SDXL_HEADS = (1, 2, 4)  # real: 5, 10, 20 (heads of 64 channels, as here)
SDXL_DEPTHS = (1, 2, 4)  # transformer blocks per attention layer; real: 1, 2, 10
SDXL_TEXT_WIDTHS = (192, 320)  # the two text encoders; real: 768, 1280
SDXL_TIME_WIDTH = 64  # per added time id; real: 256
CONTROL_EMBEDDING = (16, 32, 96, 256)  # the control image's encoder (the real one, it is small)


def save_sdxl_model(data_dir: Path) -> str:
    """Build the SDXL-layout model deterministically, save it as a diffusers folder and describe it."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    folder = data_dir / "models" / bridge.MODEL_FOLDER / SDXL_MODEL
    models._copy_builtin_tokenizer(folder / "tokenizer")
    models._copy_builtin_tokenizer(folder / "tokenizer_2", "tiny-sdxl", "tokenizer_2")
    tokenizers = [CLIPTokenizer.from_pretrained(folder / name) for name in ("tokenizer", "tokenizer_2")]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(models.BUILD_SEED)
        components = {
            "unet": UNet2DConditionModel(
                sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=SDXL_WIDTHS,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                transformer_layers_per_block=SDXL_DEPTHS, attention_head_dim=SDXL_HEADS, use_linear_projection=True,
                cross_attention_dim=sum(SDXL_TEXT_WIDTHS), addition_embed_type="text_time",
                addition_time_embed_dim=SDXL_TIME_WIDTH,
                projection_class_embeddings_input_dim=6 * SDXL_TIME_WIDTH + SDXL_TEXT_WIDTHS[1], norm_num_groups=32),
            "vae": models._vae(scaling_factor=0.13025),
            "text_encoder": models._text_encoder(tokenizers[0], SDXL_TEXT_WIDTHS[0]),
            "text_encoder_2": models._text_encoder(tokenizers[1], SDXL_TEXT_WIDTHS[1], "CLIPTextModelWithProjection"),
        }
        for module in components.values():
            models._randomize_zero_weights(module)
    scheduler = {"_class_name": "EulerDiscreteScheduler", **models._SCHEDULER_CONFIG,
                 "timestep_spacing": "leading", "interpolation_type": "linear"}  # SDXL's
    index = {"_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
             "tokenizer_2": ["transformers", "CLIPTokenizer"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    models.save_pipeline(folder, components, scheduler, index)
    return models.describe(SDXL_MODEL, components)


def save_controlnet(data_dir: Path) -> str:
    """Build a ControlNet for the SD 1.5-layout model (`models.IMAGE_MODEL`) deterministically, save it in the
    controlnet models folder and describe it."""
    from diffusers import ControlNetModel

    recipe = models.RECIPES[models.IMAGE_MODEL]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(models.BUILD_SEED + 1)
        controlnet = ControlNetModel(
            in_channels=4, block_out_channels=models.UNET_WIDTHS, layers_per_block=2, norm_num_groups=32,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), cross_attention_dim=recipe.text_width,
            attention_head_dim=models.ATTENTION_HEADS, conditioning_embedding_out_channels=CONTROL_EMBEDDING)
        models._randomize_zero_weights(controlnet)  # its zero convolutions: a trained ControlNet's are not zero
    controlnet.save_pretrained(data_dir / "models" / bridge.CONTROLNET_FOLDER / CONTROLNET, safe_serialization=True)
    return models.describe(CONTROLNET, {"controlnet": controlnet})


# --------------------------------------------------------------------------- inputs


def edge_frames(frames: int, height: int, width: int) -> torch.Tensor:
    """Control frames `[F, H, W, 3]`: the white outline of a square on black, moving right and down every frame."""
    images = torch.zeros(frames, height, width, 3)
    side = min(height, width) // 3
    for index in range(frames):
        top, left = (height - side) * index // max(frames - 1, 1), (width - side) * index // max(frames - 1, 1)
        images[index, top:top + side, left:left + side] = 1.0
        images[index, top + 2:top + side - 2, left + 2:left + side - 2] = 0.0
    return images


def clip_frames(frames: int, height: int, width: int) -> torch.Tensor:
    """A clip to edit `[F, H, W, 3]` in 0..1: colour waves drifting to the right, quantised to 8 bits as decoded
    video frames are."""
    y = torch.linspace(0, 1, height).view(1, -1, 1)
    x = torch.linspace(0, 1, width).view(1, 1, -1)
    t = torch.arange(frames, dtype=torch.float32).view(-1, 1, 1) / 16
    channels = [torch.sin(2 * math.pi * 3 * (x - t)), torch.cos(2 * math.pi * 2 * y) + 0 * t,
                torch.sin(2 * math.pi * 2 * (x + y - t))]
    return ((torch.stack([c.expand(frames, height, width) for c in channels], -1) * 0.5 + 0.5) * 255).round() / 255


@contextlib.contextmanager
def cross_frame_attention(groups: int, *modules):
    """diffusers' cross-frame processor (`groups` guidance branches) on `modules` for the duration."""
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
        CrossFrameAttnProcessor2_0)

    originals = [module.attn_processors for module in modules]
    for module in modules:
        module.set_attn_processor(CrossFrameAttnProcessor2_0(batch_size=groups))
    try:
        yield
    finally:
        for module, processors in zip(modules, originals):
            module.set_attn_processor(processors)


# --------------------------------------------------------------------------- the measured calls


@dataclasses.dataclass(frozen=True)
class Settings(common.VideoSettings):
    t0: int = 0  # sdxl
    t1: int = 0
    motion: float = 12.0
    strength: float = 1.0  # controlnet
    image_cfg: float = 1.5  # ip2p
    chunk_size: int = 0  # ip2p-chunked: 0 = all frames at once

    def warm_up(self) -> "Settings":
        return dataclasses.replace(super().warm_up(), frames=3, steps=3, t0=min(self.t0, 0), t1=min(self.t1, 1),
                                   chunk_size=min(self.chunk_size, 2))


def sdxl_reference(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    from diffusers import TextToVideoZeroSDXLPipeline

    from comfyui_text2video.samplers.schedulers import build_scheduler

    model, clip, vae = handles
    (tokenizer, text_encoder), (tokenizer_2, text_encoder_2) = clip.encoders
    with probe.stage("TextToVideoZeroSDXLPipeline"):
        pipe = TextToVideoZeroSDXLPipeline(
            vae=vae.vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=tokenizer_2, unet=model.unet, add_watermarker=False,
            scheduler=build_scheduler(settings.sampler, "normal", model.scheduler_config))
        pipe.set_progress_bar_config(disable=True)
        frames = pipe(models.PROMPT, negative_prompt=models.NEGATIVE_PROMPT, video_length=settings.frames,
                      height=settings.height, width=settings.width, num_inference_steps=settings.steps,
                      guidance_scale=settings.cfg, motion_field_strength_x=settings.motion,
                      motion_field_strength_y=settings.motion, t0=settings.t0, t1=settings.t1,
                      generator=models.seeded(settings.seed), output_type="pt").images
    return torch.as_tensor(frames).permute(0, 2, 3, 1)


def controlnet_pack(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    model, clip, vae, controlnet = handles
    images = edge_frames(settings.frames, settings.height, settings.width)
    with probe.stage("T2VTextEncode x2"):
        positive, negative = models.pack_conditioning(clip)
    with probe.stage("T2VApplyControlNet"):
        positive, negative = T2VApplyControlNet().apply(positive, negative, controlnet, images, settings.strength)
    with probe.stage("T2VSampler"):
        patched = T2VCrossFrameAttention().patch(model)[0]
        latent = T2VEmptyLatentVideo().create(settings.width, settings.height, settings.frames, 1)[0]
        latent = T2VSampler().sample(patched, positive, negative, latent, settings.seed, settings.steps, settings.cfg,
                                     settings.sampler, "normal", 1.0, frame_noise="shared")[0]
    with probe.stage("T2VVAEDecode"):
        return T2VVAEDecode().decode(vae, latent)[0]


def controlnet_reference(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    from diffusers import StableDiffusionControlNetPipeline

    model, clip, vae, controlnet = handles
    images = edge_frames(settings.frames, settings.height, settings.width)
    with probe.stage("StableDiffusionControlNetPipeline"):
        pipe = models.reference_pipeline(StableDiffusionControlNetPipeline, (model, clip, vae), settings.sampler,
                                         controlnet=controlnet.module, safety_checker=None, feature_extractor=None,
                                         requires_safety_checker=False)
        generator = models.seeded(settings.seed)
        latents = torch.randn((1, 4, settings.height // 8, settings.width // 8), generator=generator)
        with cross_frame_attention(2, model.unet, controlnet.module):
            frames = pipe(prompt=[models.PROMPT] * settings.frames,
                          negative_prompt=[models.NEGATIVE_PROMPT] * settings.frames,
                          image=images.permute(0, 3, 1, 2), latents=latents.repeat(settings.frames, 1, 1, 1),
                          generator=generator, num_inference_steps=settings.steps, guidance_scale=settings.cfg,
                          controlnet_conditioning_scale=settings.strength, output_type="pt").images
    return torch.as_tensor(frames).permute(0, 2, 3, 1)


class _Unstaged:
    """A probe that does not time: for calls measured as a whole (`ip2p_chunked`'s chunks)."""

    def stage(self, name: str):
        return contextlib.nullcontext()


def _ip2p_graph(handles, probe: common.Probe, settings: Settings, images: torch.Tensor) -> torch.Tensor:
    model, clip, vae = handles
    with probe.stage("T2VTextEncode x2"):
        positive = T2VTextEncode().encode(clip, INSTRUCTION)[0]
        negative = T2VTextEncode().encode(clip, models.NEGATIVE_PROMPT)[0]
    with probe.stage("T2VInstructPix2PixConditioning"):
        positive, negative, latent = T2VInstructPix2PixConditioning().encode(positive, negative, vae, images,
                                                                             settings.image_cfg)
    with probe.stage("T2VSampler"):
        patched = T2VCrossFrameAttention().patch(model)[0]
        latent = T2VSampler().sample(patched, positive, negative, latent, settings.seed, settings.steps, settings.cfg,
                                     settings.sampler, "normal", 1.0, frame_noise="per_frame")[0]
    with probe.stage("T2VVAEDecode"):
        return T2VVAEDecode().decode(vae, latent)[0]


def ip2p_pack(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    return _ip2p_graph(handles, probe, settings, clip_frames(settings.frames, settings.height, settings.width))


def ip2p_chunked(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    """The graph on frame 0 plus the next `chunk_size - 1` frames at a time; each later chunk's copy of frame 0
    dropped."""
    clip = clip_frames(settings.frames, settings.height, settings.width)
    edited, start, chunk = [], 0, 1
    while start < settings.frames:
        end = min(start + settings.chunk_size - (start > 0), settings.frames)
        images = clip[start:end] if start == 0 else torch.cat([clip[:1], clip[start:end]])
        with probe.stage(f"chunk {chunk}: new frames {start}-{end - 1}"):
            out = _ip2p_graph(handles, _Unstaged(), settings, images)
        edited.append(out if start == 0 else out[1:])
        start, chunk = end, chunk + 1
    return torch.cat(edited)


def ip2p_reference(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    from diffusers import StableDiffusionInstructPix2PixPipeline

    model, clip, vae = handles
    images = clip_frames(settings.frames, settings.height, settings.width)
    with probe.stage("StableDiffusionInstructPix2PixPipeline"):
        pipe = models.reference_pipeline(StableDiffusionInstructPix2PixPipeline, handles, settings.sampler,
                                         safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        with cross_frame_attention(3, model.unet):
            frames = pipe(prompt=[INSTRUCTION] * settings.frames,
                          negative_prompt=[models.NEGATIVE_PROMPT] * settings.frames,
                          image=images.permute(0, 3, 1, 2), num_inference_steps=settings.steps,
                          guidance_scale=settings.cfg, image_guidance_scale=settings.image_cfg,
                          generator=models.seeded(settings.seed), output_type="pt").images
    return torch.as_tensor(frames).permute(0, 2, 3, 1)


# --------------------------------------------------------------------------- the paths


def _load_controlnet_handles():
    return (*load_model(models.IMAGE_MODEL, "float32"), load_controlnet(CONTROLNET, "float32"))


SDXL = common.Models(lambda data_dir: [save_sdxl_model(data_dir)], lambda: load_model(SDXL_MODEL, "float32"))
CONTROLNET_MODELS = common.Models(
    lambda data_dir: [models.save_model(models.IMAGE_MODEL, data_dir), save_controlnet(data_dir)],
    _load_controlnet_handles)
INSTRUCT_PIX2PIX = models.mid_size(models.INSTRUCT_PIX2PIX_MODEL)
PATHS = ("sdxl", "controlnet", "ip2p", "ip2p-chunked")


def paths(args) -> dict[str, common.Comparison]:
    """Every path's comparison, titled without its number and the frame size, cfg and sampler they share."""
    base = Settings.from_options(args)
    sdxl = dataclasses.replace(base, steps=args.zero_steps, t0=args.t0, t1=args.t1)
    chunked = dataclasses.replace(base, steps=args.chunk_steps, chunk_size=args.chunk_size)
    return {
        "sdxl": common.Comparison(
            SDXL, {"sdxl pack": (models.text2video_zero, sdxl), "sdxl reference": (sdxl_reference, sdxl)},
            args.rounds, f"Text2Video-Zero on SDXL, {args.frames} frames, {args.zero_steps} steps, t0 {args.t0}, "
                         f"t1 {args.t1}, motion 12"),
        "controlnet": common.Comparison(
            CONTROLNET_MODELS, {"controlnet pack": (controlnet_pack, base),
                                "controlnet reference": (controlnet_reference, base)},
            args.rounds, f"ControlNet video, {args.frames} frames, {args.steps} steps"),
        "ip2p": common.Comparison(
            INSTRUCT_PIX2PIX, {"ip2p pack": (ip2p_pack, base), "ip2p reference": (ip2p_reference, base)},
            args.rounds, f"Video InstructPix2Pix, {args.frames} frames, {args.steps} steps, image_cfg 1.5"),
        "ip2p-chunked": common.Comparison(
            INSTRUCT_PIX2PIX,
            {f"ip2p {args.long_frames} frames chunked": (ip2p_chunked, dataclasses.replace(chunked,
                                                                                           frames=args.long_frames)),
             f"ip2p {args.chunk_size} frames": (ip2p_chunked, dataclasses.replace(chunked, frames=args.chunk_size))},
            args.chunk_rounds, f"Video InstructPix2Pix in chunks of {args.chunk_size}: {args.long_frames} against "
                               f"{args.chunk_size} frames, {args.chunk_steps} steps", keep_outputs=False),
    }


def benchmark(args) -> common.Benchmark:
    """The chosen paths, numbered, their titles ending with the settings they share."""
    chosen = [comparison for name, comparison in paths(args).items() if name in args.paths]
    return common.Benchmark([
        dataclasses.replace(comparison, title=f"{number}. {comparison.title}, {args.width}x{args.height}, "
                                              f"cfg {args.cfg}, {args.sampler}")
        for number, comparison in enumerate(chosen, 1)])


def main() -> None:
    parser = common.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    common.add_video_options(parser, frames=8, steps=10, cfg=7.5, seed=5,
                             sampler_help="a sampler_name the references run (ddim, dpmpp_2m, ...)",
                             frames_help="frames of the comparisons with the references",
                             steps_help="steps of the ControlNet and InstructPix2Pix runs")
    group = parser.add_argument_group("1. Text2Video-Zero on SDXL")
    group.add_argument("--zero-steps", type=int, default=12)
    group.add_argument("--t0", type=int, default=8)
    group.add_argument("--t1", type=int, default=10)
    group = parser.add_argument_group("4. chunked long videos (Video InstructPix2Pix)")
    group.add_argument("--chunk-size", type=int, default=8)
    group.add_argument("--long-frames", type=int, default=32)
    group.add_argument("--chunk-steps", type=int, default=3)
    group.add_argument("--chunk-rounds", type=int, default=1, help="measured calls per length")
    common.run(parser, benchmark)


if __name__ == "__main__":
    main()
