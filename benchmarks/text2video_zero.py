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

import common
import models


@dataclasses.dataclass(frozen=True)
class Settings(common.VideoSettings):
    t0: int
    t1: int
    motion: float
    chunk_size: int = 0

    def warm_up(self) -> "Settings":
        return dataclasses.replace(super().warm_up(), frames=3, steps=3, t0=0, t1=1)


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


def benchmark(args) -> common.Benchmark:
    model, pack = models.mid_size(models.IMAGE_MODEL), models.text2video_zero
    settings = Settings.from_options(args, t0=args.t0, t1=args.t1, motion=args.motion)
    # fewer steps in the chunked runs: memory does not depend on how many there are, only on the frames denoised
    # together
    chunked = dataclasses.replace(settings, steps=args.chunk_steps, t0=args.chunk_t0, t1=args.chunk_t1,
                                  chunk_size=args.chunk_size)
    lengths = {f"{frames} frames, chunk_size {args.chunk_size}": (pack, dataclasses.replace(chunked, frames=frames))
               for frames in (args.short_frames, args.long_frames)}
    return common.Benchmark([
        common.Comparison(model, common.pack_against_reference(pack, reference, settings), args.rounds,
                          title=f"1. Text2Video-Zero, {args.frames} frames {args.width}x{args.height}, {args.steps} "
                                f"steps, t0 {args.t0}, t1 {args.t1}, motion {args.motion}, cfg {args.cfg}, "
                                f"{args.sampler}"),
        common.Comparison(model, lengths, args.chunk_rounds, keep_outputs=False, ratio=tuple(reversed(lengths)),
                          title=f"2. chunked: chunk_size {args.chunk_size}, {args.long_frames} against "
                                f"{args.short_frames} frames, {args.chunk_steps} steps, t0 {args.chunk_t0}, "
                                f"t1 {args.chunk_t1}"),
    ])


def main() -> None:
    parser = common.argument_parser(__doc__.splitlines()[0])
    common.add_video_options(parser, frames=8, steps=12, cfg=7.5, seed=5,
                             sampler_help="a sampler_name the reference runs (ddim, dpmpp_2m, ...)",
                             frames_help="frames of the comparison with the reference")
    parser.add_argument("--t0", type=int, default=8)
    parser.add_argument("--t1", type=int, default=10)
    parser.add_argument("--motion", type=float, default=12.0, help="motion_x and motion_y")
    group = parser.add_argument_group("2. chunked long videos")
    group.add_argument("--chunk-size", type=int, default=8)
    group.add_argument("--short-frames", type=int, default=16)
    group.add_argument("--long-frames", type=int, default=64)
    group.add_argument("--chunk-steps", type=int, default=4)
    group.add_argument("--chunk-t0", type=int, default=1)
    group.add_argument("--chunk-t1", type=int, default=2)
    group.add_argument("--chunk-rounds", type=int, default=1, help="measured calls per length")
    common.run(parser, benchmark)


if __name__ == "__main__":
    main()
