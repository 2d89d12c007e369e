"""Benchmark: long videos through load + VAE encode + decode, and `T2VVideoToVideo` against diffusers.

1. Memory with the video's length: the peak memory of `T2VLoadVideo` (an mp4 written for the benchmark
   into the input folder) -> `T2VVAEEncode` -> `T2VVAEDecode` (both `frames_per_batch` 8) for 64 frames
   against 16 frames of the same file, with the loaded frames kept until the end as ComfyUI's cache keeps
   node outputs. The VAE works on 8 frames at a time either way, so only the frames themselves (the
   loaded `IMAGE`, the latents, the decoded `IMAGE`) should grow with the length: the goal is 1.3x, not
   4x. The ratio hardly depends on the frame size, since the frames and the VAE's working memory both grow
   with the pixels; it is lower with a wider VAE (the real Stable Diffusion VAE is four times as wide as
   this one) and higher with a smaller `frames_per_batch`. The figures by stage show where memory goes.
2. `T2VTextEncode` x2 -> `T2VVideoToVideo` -> `T2VVAEDecode` against one `VideoToVideoSDPipeline` call on
   the same modules of the mid-size ModelScope-layout model (`models.py`), the same input frames, prompt,
   seed, steps, strength and sampler: time and peak memory (medians, pack / reference), and the largest
   difference between the outputs (pixels in 0..1).

Method as in `text2video.py` (details in `common.py`): each measured call in a fresh process after a small
warm-up, variants alternating, medians; peak memory above what was in use before the call, on CPU as the
RSS peak with glibc's allocator as it comes and as the live peak (glibc returning freed blocks at once).

Run: `python benchmarks/video2video.py` (about 10 minutes on a busy 2-core machine); e.g. `--io-width 576
--io-height 320` for zeroscope's frame size, `--rounds 5 --steps 20` for a bigger comparison.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from comfyui_text2video.media import video_io
from comfyui_text2video.nodes.vae import T2VVAEDecode, T2VVAEEncode
from comfyui_text2video.nodes.video import T2VLoadVideo
from comfyui_text2video.nodes.video2video import T2VVideoToVideo

import common
import models

VIDEO_FILE = "benchmark.mp4"


def synthetic_video(frames: int, height: int, width: int) -> torch.Tensor:
    """`IMAGE` frames `[frames, height, width, 3]` in 0..1: colour waves drifting over time, always the same."""
    phase = torch.arange(frames, dtype=torch.float32).view(-1, 1, 1) / 8
    y = torch.linspace(0, 1, height).view(1, -1, 1)
    x = torch.linspace(0, 1, width).view(1, 1, -1)
    red = torch.sin(2 * math.pi * (3 * x + phase))
    green = torch.cos(2 * math.pi * (2 * y - phase))
    blue = torch.sin(2 * math.pi * (2 * (x + y) + 0.5 * phase))
    return (torch.stack(torch.broadcast_tensors(red, green, blue), dim=-1) * 0.5 + 0.5).clamp(0, 1)


# --------------------------------------------------------------------------- 1. load + encode + decode


@dataclasses.dataclass(frozen=True)
class RoundTripSettings:
    frames: int
    frames_per_batch: int

    def warm_up(self) -> "RoundTripSettings":
        return dataclasses.replace(self, frames=2)


def load_encode_decode(handles, probe: common.Probe, settings: RoundTripSettings) -> None:
    _model, _clip, vae = handles
    with probe.stage("T2VLoadVideo"):
        images = T2VLoadVideo().load(VIDEO_FILE, frame_limit=settings.frames, skip_first=0, select_every_nth=1)[0]
    with probe.stage("T2VVAEEncode"):
        latent = T2VVAEEncode().encode(vae, images, settings.frames_per_batch)[0]
    with probe.stage("T2VVAEDecode"):
        T2VVAEDecode().decode(vae, latent, settings.frames_per_batch)


def round_trip_variants(args) -> dict[str, tuple[common.Call, RoundTripSettings]]:
    return {f"{frames} frames": (load_encode_decode, RoundTripSettings(frames, args.frames_per_batch))
            for frames in (args.short_frames, args.long_frames)}


# --------------------------------------------------------------------------- 2. video-to-video


@dataclasses.dataclass(frozen=True)
class Settings(common.VideoSettings):
    strength: float

    def warm_up(self) -> "Settings":
        return dataclasses.replace(super().warm_up(), steps=2)


def pack(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    model, clip, vae = handles
    frames = synthetic_video(settings.frames, settings.height, settings.width)
    with probe.stage("T2VTextEncode x2"):
        positive, negative = models.pack_conditioning(clip)
    with probe.stage("T2VVideoToVideo"):
        latent = T2VVideoToVideo().refine(model, positive, negative, vae, frames, settings.seed, settings.steps,
                                          settings.cfg, settings.sampler, "normal", settings.strength)[0]
    with probe.stage("T2VVAEDecode"):
        return T2VVAEDecode().decode(vae, latent)[0]


def reference(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    from diffusers import VideoToVideoSDPipeline

    video = synthetic_video(settings.frames, settings.height, settings.width).permute(0, 3, 1, 2).unsqueeze(0)
    with probe.stage("VideoToVideoSDPipeline"):
        pipe = models.reference_pipeline(VideoToVideoSDPipeline, handles, settings.sampler)
        output = pipe(models.PROMPT, video=video, strength=settings.strength,
                      negative_prompt=models.NEGATIVE_PROMPT, num_inference_steps=settings.steps,
                      guidance_scale=settings.cfg, generator=models.seeded(settings.seed), output_type="pt").frames
    return models.reference_frames(output)


# --------------------------------------------------------------------------- main


def model_and_video(args) -> common.Models:
    """The mid-size ModelScope-layout model, and the video file in the input folder."""
    model = models.mid_size(models.TEXT2VIDEO_MODEL)

    def save(data_dir):
        described = model.save(data_dir)
        (data_dir / "input").mkdir()
        video_io.write_video(synthetic_video(args.long_frames, args.io_height, args.io_width),
                             data_dir / "input" / VIDEO_FILE, "mp4", fps=8.0, quality=95)
        return described

    return common.Models(save, model.load)


def benchmark(args) -> common.Benchmark:
    model = model_and_video(args)
    round_trips = round_trip_variants(args)
    frame_bytes = args.io_width * args.io_height * 3 * 4
    return common.Benchmark([
        common.Comparison(
            model, round_trips, args.io_rounds, keep_outputs=False, ratio=tuple(reversed(round_trips)),
            title=f"1. T2VLoadVideo -> T2VVAEEncode -> T2VVAEDecode, {args.io_width}x{args.io_height} mp4, "
                  f"frames_per_batch {args.frames_per_batch}; an IMAGE frame (float32) is "
                  f"{frame_bytes / common.MIB:.2f} MiB, {args.long_frames} of them "
                  f"{args.long_frames * frame_bytes / common.MIB:.1f} MiB"),
        common.Comparison(
            model, common.pack_against_reference(pack, reference, Settings.from_options(args, strength=args.strength)),
            args.rounds,
            title=f"2. video-to-video, {args.frames} frames {args.width}x{args.height}, {args.steps} steps at strength "
                  f"{args.strength} ({int(args.steps * args.strength)} run), cfg {args.cfg}, {args.sampler}"),
    ])


def main() -> None:
    parser = common.argument_parser(__doc__.splitlines()[0])
    group = parser.add_argument_group("1. load + encode + decode")
    group.add_argument("--short-frames", type=int, default=16)
    group.add_argument("--long-frames", type=int, default=64)
    group.add_argument("--io-width", type=int, default=256, help="frame width of the video file")
    group.add_argument("--io-height", type=int, default=256, help="frame height of the video file")
    group.add_argument("--frames-per-batch", type=int, default=8, help="the VAE nodes' frames_per_batch")
    group.add_argument("--io-rounds", type=int, default=1, help="measured calls per length")
    group = parser.add_argument_group("2. video-to-video against the reference")
    common.add_video_options(group, frames=16, steps=8, cfg=9.0, seed=7, sampler_help="a T2VVideoToVideo sampler_name")
    group.add_argument("--strength", type=float, default=0.5)
    common.run(parser, benchmark)


if __name__ == "__main__":
    main()
