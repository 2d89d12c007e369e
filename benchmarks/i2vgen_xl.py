"""Benchmark: I2VGen-XL image-to-video through the pack's nodes against diffusers' `I2VGenXLPipeline`.

The pack's graph `T2VTextEncode` x2 -> `T2VI2VGenXLConditioning` -> `T2VSampler` -> `T2VVAEDecode` against one
`I2VGenXLPipeline` call, both decoding one frame at a time (the pipeline's default `decode_chunk_size` 1; the
node's `frames_per_batch` 8 decodes faster with more memory: `--frames-per-batch 8`), on the same modules
of a mid-size I2VGen-XL-layout model built here: the real block types, layers per block and attention layout of
the UNet at a fifth of its widths (as the other benchmarks' models, `models.py`), a CLIP text encoder and a CLIP
image encoder (224 pixels, 32-pixel patches) a quarter as wide as the real ones, the benchmarks' VAE; with the same
image, prompt, negative prompt, seed, steps, guidance, target fps and sampler. The reference draws the image's
posterior sample from torch's global generator, so the reference side seeds that with the seed too.

Method as in `text2video.py` (details in `common.py`): each measured call in a fresh process after a small
warm-up, the two sides alternating, medians; ratios are pack / reference; peak memory above what was in use
before the call (on CPU the RSS peak with glibc's allocator as it comes, and the live peak).

Run: `python benchmarks/i2vgen_xl.py` (a few minutes on a busy 2-core machine); e.g. `--frames 16 --width 256
--height 160 --steps 20 --rounds 5` for a bigger run. Not part of the test suite.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import torch

from comfyui_text2video import bridge
from comfyui_text2video.models.builtin import _write_image_processor
from comfyui_text2video.models.loading import load_model
from comfyui_text2video.nodes.i2vgen_xl import T2VI2VGenXLConditioning
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.vae import T2VVAEDecode

import common
import models

MODEL = "benchmark-i2vgen-xl"
TEXT_WIDTH = 256  # real: 1024


@dataclasses.dataclass(frozen=True)
class Settings(common.VideoSettings):
    target_fps: int
    frames_per_batch: int


def picture(height: int, width: int) -> torch.Tensor:
    """An IMAGE `[1, H, W, 3]`: smooth colour waves, always the same."""
    y = torch.linspace(0, 1, height).view(-1, 1)
    x = torch.linspace(0, 1, width).view(1, -1)
    channels = [torch.sin(6 * x + 2 * y), torch.cos(4 * y - 3 * x), torch.sin(5 * (x + y))]
    return (torch.stack(torch.broadcast_tensors(*channels), dim=-1) * 0.5 + 0.5).unsqueeze(0)


def save_model(data_dir: Path) -> str:
    """The mid-size I2VGen-XL-layout model, built deterministically into the benchmark's models folder."""
    from diffusers import I2VGenXLUNet
    from transformers import CLIPTokenizer, CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = data_dir / "models" / bridge.MODEL_FOLDER / MODEL
    models._copy_builtin_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    _write_image_processor(folder / "feature_extractor")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(models.BUILD_SEED)
        components = {
            "unet": I2VGenXLUNet(
                sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=models.UNET_WIDTHS,
                down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
                up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3, cross_attention_dim=TEXT_WIDTH,
                attention_head_dim=models.ATTENTION_HEADS, norm_num_groups=32),
            "vae": models._vae(),
            "text_encoder": models._text_encoder(tokenizer, TEXT_WIDTH),
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_hidden_layers=4, num_attention_heads=4,
                image_size=224, patch_size=32, projection_dim=TEXT_WIDTH)),
        }
        for module in components.values():
            models._randomize_zero_weights(module)
    index = {"_class_name": "I2VGenXLPipeline", "unet": ["diffusers", "I2VGenXLUNet"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
             "feature_extractor": ["transformers", "CLIPImageProcessor"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "DDIMScheduler"]}
    models.save_pipeline(folder, components, {"_class_name": "DDIMScheduler", **models._SCHEDULER_CONFIG}, index)
    return models.describe(MODEL, components)


def pack(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    model, clip, vae = handles
    image = picture(settings.height + 24, settings.width + 40)
    with probe.stage("T2VTextEncode x2"):
        positive, negative = models.pack_conditioning(clip)
    with probe.stage("T2VI2VGenXLConditioning"):
        positive, negative, latent = T2VI2VGenXLConditioning().encode(
            positive, negative, clip, vae, image, settings.width, settings.height, settings.frames,
            settings.target_fps, settings.seed)
    with probe.stage("T2VSampler"):
        latent = T2VSampler().sample(model, positive, negative, latent, settings.seed, settings.steps, settings.cfg,
                                     settings.sampler, "normal", 1.0)[0]
    with probe.stage("T2VVAEDecode"):
        return T2VVAEDecode().decode(vae, latent, settings.frames_per_batch)[0]


def reference(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    from diffusers import I2VGenXLPipeline
    from PIL import Image

    model, clip, vae = handles
    (tokenizer, text_encoder), (feature_extractor, image_encoder) = clip.encoders
    image = picture(settings.height + 24, settings.width + 40)
    pil = Image.fromarray((image[0] * 255).round().to(torch.uint8).numpy())
    if not hasattr(text_encoder, "text_model"):  # the pipeline reads `text_model.final_layer_norm` (transformers 4)
        object.__setattr__(text_encoder, "text_model", SimpleNamespace(final_layer_norm=text_encoder.final_layer_norm))
    with probe.stage("I2VGenXLPipeline"):
        pipe = I2VGenXLPipeline(vae=vae.vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                image_encoder=image_encoder, feature_extractor=feature_extractor, unet=model.unet,
                                scheduler=models.build_scheduler(settings.sampler, "normal", model.scheduler_config))
        pipe.set_progress_bar_config(disable=True)
        torch.manual_seed(settings.seed)  # the image's posterior sample comes from the global generator
        return models.reference_video(pipe, settings, image=pil, target_fps=settings.target_fps)


def benchmark(args) -> common.Benchmark:
    settings = Settings.from_options(args, target_fps=args.target_fps, frames_per_batch=args.frames_per_batch)
    variants = common.pack_against_reference(pack, reference, settings)
    return common.Benchmark(
        [common.Comparison(common.Models(lambda data_dir: [save_model(data_dir)], lambda: load_model(MODEL, "float32")),
                           variants, args.rounds)],
        heading=f"I2VGen-XL image-to-video, {args.frames} frames {args.width}x{args.height}, {args.steps} steps, "
                f"cfg {args.cfg}, target fps {args.target_fps}, {args.sampler}, decoding {args.frames_per_batch} "
                "frame(s) at a time")


def main() -> None:
    parser = common.argument_parser(__doc__.splitlines()[0])
    common.add_video_options(parser, frames=16, height=96, steps=10, cfg=9.0, seed=42)
    parser.add_argument("--target-fps", type=int, default=16)
    parser.add_argument("--frames-per-batch", type=int, default=1, help="T2VVAEDecode's frames_per_batch")
    common.run(parser, benchmark)


if __name__ == "__main__":
    main()
