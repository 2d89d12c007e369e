"""Benchmark: Stable Video Diffusion image -> video through the pack's nodes against diffusers' pipeline.

`T2VSVDConditioning` -> `T2VSampler` (euler, karras) -> `T2VVAEDecode` against one
`StableVideoDiffusionPipeline` call on the same modules of a mid-size SVD-layout model (built here: the real
block types, layers per block and attention head width at a fifth of the UNet's widths, a quarter of the
temporal VAE's, a small CLIP image encoder at the real 224x224 input), the same image, seed, steps,
guidance ramp, fps, motion, augmentation and decode chunk size: time and peak memory (medians, pack /
reference) and the largest difference between the outputs (pixels in 0..1).

Method as in `text2video.py` (details in `common.py`): each measured call in a fresh process after a small
warm-up, variants alternating, medians; peak memory above what was in use before the call, on CPU as the
RSS peak with glibc's allocator as it comes and as the live peak (glibc returning freed blocks at once).

Run: `python benchmarks/svd.py` (about 5 minutes on a busy 2-core machine); e.g. `--width 256 --height 144
--frames 14 --steps 10` for a bigger comparison.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from comfyui_text2video import bridge
from comfyui_text2video.models.loading import load_model
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.svd import T2VSVDConditioning
from comfyui_text2video.nodes.vae import T2VVAEDecode

import common
import models

SVD_MODEL = "benchmark-svd"
UNET_WIDTHS = (64, 128, 256, 256)  # real: 320, 640, 1280, 1280
HEADS = (1, 2, 4, 4)  # real: 5, 10, 20, 20 (heads of 64 channels, as here)
IMAGE_WIDTH = 256  # the image embedding (the UNet's cross-attention width); real: 1024
TIME_WIDTH = 64  # per added time id; real: 256
VAE_WIDTHS = (32, 64, 128, 128)  # real: 128, 256, 512, 512
SCHEDULER = {  # the real checkpoint's scheduler config
    "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "clip_sample": False, "interpolation_type": "linear",
    "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False, "sigma_max": 700.0,
    "sigma_min": 0.002, "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading",
    "timestep_type": "continuous", "trained_betas": None, "use_karras_sigmas": True,
}
IMAGE_PROCESSOR = {  # CLIP's
    "image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 224, "width": 224},
    "size": {"shortest_edge": 224}, "do_center_crop": True, "do_normalize": True, "do_rescale": True,
    "do_resize": True, "resample": 3, "rescale_factor": 1 / 255,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
}


def save_svd_model(data_dir: Path) -> str:
    """Build the SVD-layout model deterministically, save it as a diffusers folder and describe it."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    folder = data_dir / "models" / bridge.MODEL_FOLDER / SVD_MODEL
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(models.BUILD_SEED)
        components = {
            "unet": UNetSpatioTemporalConditionModel(
                sample_size=96, in_channels=8, out_channels=4, layers_per_block=2, block_out_channels=UNET_WIDTHS,
                num_attention_heads=HEADS, cross_attention_dim=IMAGE_WIDTH, addition_time_embed_dim=TIME_WIDTH,
                projection_class_embeddings_input_dim=3 * TIME_WIDTH, num_frames=14),
            "vae": AutoencoderKLTemporalDecoder(
                in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=VAE_WIDTHS,
                down_block_types=("DownEncoderBlock2D",) * len(VAE_WIDTHS), scaling_factor=0.18215),
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=IMAGE_WIDTH, intermediate_size=4 * IMAGE_WIDTH, num_hidden_layers=4,
                num_attention_heads=4, image_size=224, patch_size=14, projection_dim=IMAGE_WIDTH)),
        }
        for module in components.values():
            models._randomize_zero_weights(module)  # the same preparation as the other benchmark models
    (folder / "feature_extractor").mkdir(parents=True)
    (folder / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps(IMAGE_PROCESSOR, indent=1))
    index = {"_class_name": "StableVideoDiffusionPipeline",
             "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
             "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
             "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
             "feature_extractor": ["transformers", "CLIPImageProcessor"],
             "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    models.save_pipeline(folder, components, SCHEDULER, index)
    return models.describe(SVD_MODEL, components)


def picture(height: int, width: int) -> np.ndarray:
    """An 8-bit RGB picture (colour waves), as core LoadImage would read it."""
    y = np.linspace(0, 1, height).reshape(-1, 1)
    x = np.linspace(0, 1, width).reshape(1, -1)
    channels = np.broadcast_arrays(np.sin(2 * math.pi * 3 * x), np.cos(2 * math.pi * 2 * y),
                                   np.sin(2 * math.pi * 2 * (x + y)))
    return ((np.stack(channels, axis=-1) * 0.5 + 0.5) * 255).round().astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Settings:
    frames: int
    width: int
    height: int
    steps: int
    cfg: float
    min_cfg: float
    decode_chunk: int
    seed: int
    fps: int = 7
    motion: int = 127
    augmentation: float = 0.02

    def warm_up(self) -> "Settings":
        return dataclasses.replace(self, frames=2, width=64, height=64, steps=1, decode_chunk=2)


def pack(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    model, clip, vae = handles
    image = torch.from_numpy(picture(settings.height, settings.width).astype(np.float32) / 255).unsqueeze(0)
    with probe.stage("T2VSVDConditioning"):
        positive, negative, latent = T2VSVDConditioning().encode(
            clip, vae, image, settings.width, settings.height, settings.frames, settings.fps, settings.motion,
            settings.augmentation, settings.seed, settings.min_cfg)
    with probe.stage("T2VSampler"):
        latent = T2VSampler().sample(model, positive, negative, latent, settings.seed, settings.steps, settings.cfg,
                                     "euler", "karras", 1.0)[0]
    with probe.stage("T2VVAEDecode"):
        return T2VVAEDecode().decode(vae, latent, settings.decode_chunk)[0]


def reference(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
    from PIL import Image

    model, clip, vae = handles
    with probe.stage("StableVideoDiffusionPipeline"):
        pipe = StableVideoDiffusionPipeline(
            vae=vae.vae, image_encoder=clip.text_encoder, unet=model.unet, feature_extractor=clip.tokenizer,
            scheduler=EulerDiscreteScheduler.from_config(model.scheduler_config))
        pipe.set_progress_bar_config(disable=True)
        output = pipe(Image.fromarray(picture(settings.height, settings.width)), height=settings.height,
                      width=settings.width, num_frames=settings.frames, num_inference_steps=settings.steps,
                      min_guidance_scale=settings.min_cfg, max_guidance_scale=settings.cfg, fps=settings.fps,
                      motion_bucket_id=settings.motion, noise_aug_strength=settings.augmentation,
                      decode_chunk_size=settings.decode_chunk, generator=models.seeded(settings.seed),
                      output_type="pt").frames
    return models.reference_frames(output)


def benchmark(args) -> common.Benchmark:
    settings = Settings(args.frames, args.width, args.height, args.steps, args.cfg, args.min_cfg, args.decode_chunk,
                        args.seed)
    return common.Benchmark([common.Comparison(
        common.Models(lambda data_dir: [save_svd_model(data_dir)], lambda: load_model(SVD_MODEL, "float32")),
        common.pack_against_reference(pack, reference, settings), args.rounds,
        title=f"image -> video, {args.frames} frames {args.width}x{args.height}, {args.steps} steps euler karras, "
              f"guidance {args.min_cfg} -> {args.cfg}, decoded {args.decode_chunk} frames at a time")])


def main() -> None:
    parser = common.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cfg", type=float, default=3.0, help="the last frame's guidance (max_guidance_scale)")
    parser.add_argument("--min-cfg", type=float, default=1.0, help="the first frame's guidance")
    parser.add_argument("--decode-chunk", type=int, default=4, help="frames decoded together (decode_chunk_size)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3, help="measured calls per side")
    common.run(parser, benchmark)


if __name__ == "__main__":
    main()
