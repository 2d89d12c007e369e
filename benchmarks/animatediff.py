"""Benchmark: AnimateDiff text-to-video through the pack's nodes against diffusers' `AnimateDiffPipeline`.

The pack's graph `T2VApplyMotionAdapter` -> `T2VTextEncode` x2 -> `T2VEmptyLatentVideo` -> `T2VSampler` ->
`T2VVAEDecode` against one `AnimateDiffPipeline` call (its construction included: it builds the motion UNet
with `UNetMotionModel.from_unet2d`, as the pack's patch node builds its own) on the same modules: the mid-size
Stable Diffusion 1.5-layout model of `models.py` and a motion adapter of the real layout at the same fifth of
the widths (two motion layers per block, a mid-block motion module, 8 heads, 32 positions), with the same
prompt, negative prompt, seed, steps, guidance and sampler.

Method as in `text2video.py` (details in `common.py`): each measured call in a fresh process after a small
warm-up, the two sides alternating, medians; ratios are pack / reference; peak memory above what was in use
before the call (on CPU the RSS peak with glibc's allocator as it comes, and the live peak). The pack's motion
UNet shares the model's and the adapter's weights; the reference's copies them, which shows in its peak memory.

Run: `python benchmarks/animatediff.py` (a few minutes on a busy 2-core machine); e.g. `--frames 16 --width 256
--height 256 --steps 20 --rounds 5` for a bigger run. Not part of the test suite.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from comfyui_text2video import bridge
from comfyui_text2video.models.loading import load_model
from comfyui_text2video.models.motion_adapter import load_motion_adapter
from comfyui_text2video.nodes.animatediff import T2VApplyMotionAdapter
from comfyui_text2video.nodes.latent import T2VEmptyLatentVideo
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.vae import T2VVAEDecode

import common
import models

ADAPTER = "benchmark-motion-adapter"


@dataclasses.dataclass(frozen=True)
class Settings:
    frames: int
    width: int
    height: int
    steps: int
    cfg: float
    sampler: str
    seed: int

    def warm_up(self) -> "Settings":
        return dataclasses.replace(self, frames=2, width=64, height=64, steps=1)


def save_adapter(data_dir: Path) -> str:
    """A motion adapter for the mid-size image model, built deterministically into the motion models folder."""
    from diffusers import MotionAdapter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(models.BUILD_SEED)
        adapter = MotionAdapter(block_out_channels=models.UNET_WIDTHS, motion_layers_per_block=2,
                                motion_num_attention_heads=models.ATTENTION_HEADS, motion_norm_num_groups=32,
                                motion_max_seq_length=32)
        models._randomize_zero_weights(adapter)
    adapter.save_pretrained(data_dir / "models" / bridge.MOTION_ADAPTER_FOLDER / ADAPTER, safe_serialization=True)
    return f"motion adapter {ADAPTER}: {sum(p.numel() for p in adapter.parameters()) / 1e6:.1f}M parameters"


def pack(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    model, clip, vae, adapter = handles
    with probe.stage("T2VApplyMotionAdapter"):
        model = T2VApplyMotionAdapter().patch(model, adapter)[0]
    with probe.stage("T2VTextEncode x2"):
        positive, negative = models.pack_conditioning(clip)
    with probe.stage("T2VSampler"):
        latent = T2VEmptyLatentVideo().create(settings.width, settings.height, settings.frames, 1)[0]
        latent = T2VSampler().sample(model, positive, negative, latent, settings.seed, settings.steps, settings.cfg,
                                     settings.sampler, "normal", 1.0)[0]
    with probe.stage("T2VVAEDecode"):
        return T2VVAEDecode().decode(vae, latent)[0]


def reference(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    from diffusers import AnimateDiffPipeline

    model, clip, vae, adapter = handles
    with probe.stage("AnimateDiffPipeline"):
        pipe = models.reference_pipeline(AnimateDiffPipeline, (model, clip, vae), settings.sampler,
                                         motion_adapter=adapter.module)
        video = pipe(models.PROMPT, negative_prompt=models.NEGATIVE_PROMPT, num_frames=settings.frames,
                     height=settings.height, width=settings.width, num_inference_steps=settings.steps,
                     guidance_scale=settings.cfg, generator=models.seeded(settings.seed), output_type="pt").frames
    return models.reference_frames(video)


def variants(args) -> dict[str, tuple[common.Call, Settings]]:
    settings = Settings(args.frames, args.width, args.height, args.steps, args.cfg, args.sampler, args.seed)
    return {"pack": (pack, settings), "reference": (reference, settings)}


def main() -> None:
    parser = common.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--sampler", default="ddim", help="a T2VSampler sampler_name")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=3, help="measured calls per side")
    args = parser.parse_args()
    device = common.configure(args)
    if args.worker:
        handles = load_model(models.IMAGE_MODEL, "float32")
        common.run_worker(args, device, (*handles, load_motion_adapter(ADAPTER)), variants(args))
        return

    common.print_environment(args, device)
    print(f"AnimateDiff text-to-video, {args.frames} frames {args.width}x{args.height}, {args.steps} steps, "
          f"cfg {args.cfg}, {args.sampler}")
    with common.data_folder() as data_dir:
        print(models.save_model(models.IMAGE_MODEL, data_dir))
        print(save_adapter(data_dir))
        measured = common.measure(data_dir, device, list(variants(args)), args.rounds, keep_outputs=True)
        common.print_report(measured, "pack", "reference")
    print(f"load average at the end: {common.load_average()}")


if __name__ == "__main__":
    main()
