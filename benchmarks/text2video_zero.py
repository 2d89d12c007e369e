"""Benchmark: `T2VText2VideoZero` against diffusers' `TextToVideoZeroPipeline`, and chunked long videos.

1. `T2VTextEncode` x2 -> `T2VText2VideoZero` -> `T2VVAEDecode` (default `frames_per_batch`, 8) against one
   `TextToVideoZeroPipeline` call on the same modules of a mid-size Stable Diffusion 1.5-layout model
   (`models.py`: the real block types at a fifth of the width, about 35M UNet parameters), with the same
   prompt, negative prompt, seed, steps, t0/t1, motion and sampler: time and peak memory (medians,
   pack / reference) and the largest difference between the outputs (pixels in 0..1).
2. Memory with the video's length: the same pack graph with `chunk_size` 8 for 64 frames against 16
   frames. Each chunk denoises 8 frames (the anchor and 7 new ones), so the goal is a peak within 1.3x.

Method as in `text2video.py` (details in `common.py`): each measured call in a fresh process after a small
warm-up, variants alternating, medians; peak memory above what was in use before the call, on CPU as the
RSS peak with glibc's allocator as it comes and as the live peak (glibc returning freed blocks at once).

Run: `python benchmarks/text2video_zero.py` (about 5 minutes on a busy 2-core machine); e.g. `--width 512 --height 512
--steps 50 --t0 44 --t1 47` for the reference's defaults.
"""

from __future__ import annotations

import dataclasses

import torch

from comfyui_text2video.models.loading import load_model
from comfyui_text2video.nodes.text2video_zero import T2VText2VideoZero
from comfyui_text2video.nodes.vae import T2VVAEDecode

import common
import models


@dataclasses.dataclass(frozen=True)
class Settings:
    frames: int
    width: int
    height: int
    steps: int
    t0: int
    t1: int
    motion: float
    cfg: float
    sampler: str
    seed: int
    chunk_size: int = 0

    def warm_up(self) -> "Settings":
        return dataclasses.replace(self, frames=3, width=64, height=64, steps=3, t0=0, t1=1)


def pack(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    model, clip, vae = handles
    with probe.stage("T2VTextEncode x2"):
        positive, negative = models.pack_conditioning(clip)
    with probe.stage("T2VText2VideoZero"):
        latent = T2VText2VideoZero().generate(
            model, positive, negative, settings.seed, settings.steps, settings.cfg, settings.sampler, "normal",
            settings.width, settings.height, settings.frames, settings.motion, settings.motion, settings.t0,
            settings.t1, settings.chunk_size)[0]
    with probe.stage("T2VVAEDecode"):
        return T2VVAEDecode().decode(vae, latent)[0]


def reference(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    from diffusers import TextToVideoZeroPipeline

    with probe.stage("TextToVideoZeroPipeline"):
        pipe = models.reference_pipeline(TextToVideoZeroPipeline, handles, settings.sampler, safety_checker=None,
                                         feature_extractor=None, requires_safety_checker=False)
        frames = pipe(models.PROMPT, video_length=settings.frames, height=settings.height, width=settings.width,
                      num_inference_steps=settings.steps, guidance_scale=settings.cfg,
                      negative_prompt=models.NEGATIVE_PROMPT, motion_field_strength_x=settings.motion,
                      motion_field_strength_y=settings.motion, t0=settings.t0, t1=settings.t1,
                      generator=models.seeded(settings.seed)).images
    return torch.from_numpy(frames)  # [F, H, W, 3] in 0..1


def settings_from(args) -> Settings:
    return Settings(args.frames, args.width, args.height, args.steps, args.t0, args.t1, args.motion, args.cfg,
                    args.sampler, args.seed)


def comparison_variants(args) -> dict[str, tuple[common.Call, Settings]]:
    return {"pack": (pack, settings_from(args)), "reference": (reference, settings_from(args))}


def chunked_variants(args) -> dict[str, tuple[common.Call, Settings]]:
    """The long and the short video, chunked; fewer steps than the comparison, since memory does not depend on
    how many there are (only on the frames denoised together)."""
    settings = dataclasses.replace(settings_from(args), steps=args.chunk_steps, t0=args.chunk_t0, t1=args.chunk_t1,
                                   chunk_size=args.chunk_size)
    return {f"{frames} frames, chunk_size {args.chunk_size}": (pack, dataclasses.replace(settings, frames=frames))
            for frames in (args.short_frames, args.long_frames)}


def parse_arguments():
    parser = common.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8, help="frames of the comparison with the reference")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--t0", type=int, default=8)
    parser.add_argument("--t1", type=int, default=10)
    parser.add_argument("--motion", type=float, default=12.0, help="motion_x and motion_y")
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--sampler", default="ddim", help="a sampler_name the reference runs (ddim, dpmpp_2m, ...)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="measured calls per side")
    group = parser.add_argument_group("2. chunked long videos")
    group.add_argument("--chunk-size", type=int, default=8)
    group.add_argument("--short-frames", type=int, default=16)
    group.add_argument("--long-frames", type=int, default=64)
    group.add_argument("--chunk-steps", type=int, default=4)
    group.add_argument("--chunk-t0", type=int, default=1)
    group.add_argument("--chunk-t1", type=int, default=2)
    group.add_argument("--chunk-rounds", type=int, default=1, help="measured calls per length")
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    device = common.configure(args)
    if args.worker:
        common.run_worker(args, device, load_model(models.IMAGE_MODEL, "float32"),
                          {**comparison_variants(args), **chunked_variants(args)})
        return

    common.print_environment(args, device)
    with common.data_folder() as data_dir:
        print(models.save_model(models.IMAGE_MODEL, data_dir))
        print(f"\n1. Text2Video-Zero, {args.frames} frames {args.width}x{args.height}, {args.steps} steps, "
              f"t0 {args.t0}, t1 {args.t1}, motion {args.motion}, cfg {args.cfg}, {args.sampler}")
        measured = common.measure(data_dir, device, list(comparison_variants(args)), args.rounds,
                                  keep_outputs=True)
        common.print_report(measured, "pack", "reference")

        print(f"\n2. chunked: chunk_size {args.chunk_size}, {args.long_frames} against {args.short_frames} frames, "
              f"{args.chunk_steps} steps, t0 {args.chunk_t0}, t1 {args.chunk_t1}")
        chunked = list(chunked_variants(args))
        measured = common.measure(data_dir, device, chunked, args.chunk_rounds)
        common.print_report(measured, *reversed(chunked))
    print(f"load average at the end: {common.load_average()}")


if __name__ == "__main__":
    main()
