"""Benchmark: long videos with `T2VContextWindows`, memory against the length of the video.

The pack's graph `T2VTextEncode` x2 -> `T2VEmptyLatentVideo` -> [`T2VContextWindows`] -> `T2VSampler` ->
`T2VVAEDecode` on the mid-size ModelScope-layout model of `models.py` (a 3D UNet the tests never see), for:

- `16 frames`: a plain 16-frame run (the length ModelScope was trained on);
- `64 frames, windows`: 64 frames through 16-frame windows overlapping by 4, pyramid fusion;
- `64 frames, plain`: 64 frames at once, for contrast;
- `96 frames v2v, windows`: `T2VVideoToVideo` on a 96-frame video (the decoded 16-frame run, repeated) with
  the same windows.

The figure of merit is the peak memory of the call above what was in use before it (the loaded model does
not count), measured as the live peak of `common.py` (glibc returns freed blocks at once, so the RSS follows
the tensors the code keeps alive): the windowed 64-frame run should need at most 1.3x the 16-frame run's.

Run: `python benchmarks/long_video.py` (about 15 minutes on a busy 2-core machine). Not part of the test suite.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from comfyui_text2video.nodes.long_video import T2VContextWindows
from comfyui_text2video.nodes.vae import T2VVAEDecode
from comfyui_text2video.nodes.video2video import T2VVideoToVideo

import common
import models


@dataclasses.dataclass(frozen=True)
class Settings(common.VideoSettings):
    windows: bool
    context_length: int = 16
    context_overlap: int = 4

    def warm_up(self) -> "Settings":
        return dataclasses.replace(super().warm_up(), frames=min(self.frames, 6), steps=2, context_length=4,
                                   context_overlap=1)


def windowed(model, settings: Settings):
    if not settings.windows:
        return model
    return T2VContextWindows().patch(model, settings.context_length, settings.context_overlap, "standard_static",
                                     "pyramid")[0]


def text_to_video(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    model, clip, vae = handles
    return models.text_to_video((windowed(model, settings), clip, vae), probe, settings)


def video_to_video(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    model, clip, vae = handles
    positive, negative = models.pack_conditioning(clip)
    generator = torch.Generator().manual_seed(settings.seed)
    clip_frames = torch.rand(16, settings.height, settings.width, 3, generator=generator)
    images = clip_frames.repeat((settings.frames + 15) // 16, 1, 1, 1)[:settings.frames]
    with probe.stage("T2VVideoToVideo"):
        latent = T2VVideoToVideo().refine(windowed(model, settings), positive, negative, vae, images, settings.seed,
                                          settings.steps, settings.cfg, settings.sampler, "normal", 0.6)[0]
    with probe.stage("T2VVAEDecode"):
        return T2VVAEDecode().decode(vae, latent)[0]


def report_peaks(data_dir: Path, device: torch.device, comparison: common.Comparison) -> None:
    """Live-memory runs of every variant; each one's peak and the longer ones' peaks over the 16-frame run's."""
    runs = common.run_interleaved(data_dir, list(comparison.variants), comparison.rounds,
                                  environment=common.LIVE_MEMORY_ENVIRONMENT)
    peaks = {name: min(run.peak_bytes for run in variant_runs) for name, variant_runs in runs.items()}
    print()
    for name, variant_runs in runs.items():
        stages = ", ".join(f"{stage.name} {stage.peak_bytes / common.MIB:.0f} MiB" for stage in variant_runs[0].stages)
        print(f"  {name:<24} peak above the loaded model {peaks[name] / common.MIB:7.1f} MiB  ({stages}; "
              f"{min(run.seconds for run in variant_runs):.0f} s)")
    for name in ("64 frames, windows", "64 frames, plain", "96 frames v2v, windows"):
        print(f"  {name} / 16 frames: peak memory {peaks[name] / peaks['16 frames']:.2f}x")


def benchmark(args) -> common.Benchmark:
    def settings(frames, windows):
        return Settings(frames, args.width, args.height, args.steps, cfg=9.0, sampler="ddim", seed=42, windows=windows)

    variants = {"16 frames": (text_to_video, settings(16, False)),
                "64 frames, windows": (text_to_video, settings(64, True)),
                "64 frames, plain": (text_to_video, settings(64, False)),
                "96 frames v2v, windows": (video_to_video, settings(96, True))}
    return common.Benchmark(
        [common.Comparison(models.mid_size(models.TEXT2VIDEO_MODEL), variants, args.rounds, report=report_peaks)],
        heading=f"long videos, {args.width}x{args.height}, {args.steps} ddim step(s), cfg 9, windows 16/4 "
                "standard_static pyramid; memory: the live peak (glibc returning freed blocks at once, see common.py)")


def main() -> None:
    parser = common.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1, help="memory does not depend on it")
    parser.add_argument("--rounds", type=int, default=1, help="measured calls per variant")
    common.run(parser, benchmark)


if __name__ == "__main__":
    main()
