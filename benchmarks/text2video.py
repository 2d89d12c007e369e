"""Benchmark: text-to-video through the pack's nodes against diffusers' `TextToVideoSDPipeline`.

The pack's graph `T2VTextEncode` x2 -> `T2VEmptyLatentVideo` -> `T2VSampler` -> `T2VVAEDecode` (default
`frames_per_batch`, 8) against one `TextToVideoSDPipeline` call on the same modules of a mid-size
ModelScope-layout model (`models.py`: the real block types at a fifth of the width, about 57M UNet
parameters), with the same prompt, negative prompt, seed, steps, guidance and sampler.

Method (details in `common.py`): every measured call runs in a fresh process, after one small warm-up call
of the same variant; the two sides alternate (pack, reference, reference, pack, ...) and the table gives
medians; the ratios are pack / reference. Time is wall-clock. Peak memory is the most memory the call
needed above what was in use right before it. On CPU it is read from the resident set size (the kernel's
RSS high-water mark, reset before each stage, minus the RSS before the call), as two figures: the RSS peak
with glibc's allocator as it comes (what the machine has to provide, including freed blocks glibc keeps
for reuse), and the live peak from one more run per side in which glibc returns freed blocks at once
(`MALLOC_MMAP_THRESHOLD_`), so that the RSS follows the tensors the code keeps alive. On CUDA it is
`torch.cuda.max_memory_allocated` minus the allocation before the call. The outputs (pixels in 0..1) are
compared as their largest absolute difference.

Run: `python benchmarks/text2video.py` (about 5 minutes on a busy 2-core machine); e.g. `--frames 16 --width 256
--height 256 --steps 20 --rounds 5` for a bigger run. Not part of the test suite.
"""

from __future__ import annotations

import dataclasses

import torch

from comfyui_text2video.models.loading import load_model
from comfyui_text2video.nodes.latent import T2VEmptyLatentVideo
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.vae import T2VVAEDecode

import common
import models


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
        """The same call, small: every code path runs once before the measured call."""
        return dataclasses.replace(self, frames=2, width=64, height=64, steps=1)


def pack(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    model, clip, vae = handles
    with probe.stage("T2VTextEncode x2"):
        positive, negative = models.pack_conditioning(clip)
    with probe.stage("T2VSampler"):
        latent = T2VEmptyLatentVideo().create(settings.width, settings.height, settings.frames, 1)[0]
        latent = T2VSampler().sample(model, positive, negative, latent, settings.seed, settings.steps, settings.cfg,
                                     settings.sampler, "normal", 1.0)[0]
    with probe.stage("T2VVAEDecode"):
        return T2VVAEDecode().decode(vae, latent)[0]


def reference(handles, probe: common.Probe, settings: Settings) -> torch.Tensor:
    from diffusers import TextToVideoSDPipeline

    with probe.stage("TextToVideoSDPipeline"):
        pipe = models.reference_pipeline(TextToVideoSDPipeline, handles, settings.sampler)
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
    parser.add_argument("--cfg", type=float, default=9.0)
    parser.add_argument("--sampler", default="ddim", help="a T2VSampler sampler_name")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=3, help="measured calls per side")
    args = parser.parse_args()
    device = common.configure(args)
    if args.worker:
        common.run_worker(args, device, load_model(models.TEXT2VIDEO_MODEL, "float32"), variants(args))
        return

    common.print_environment(args, device)
    print(f"text-to-video, {args.frames} frames {args.width}x{args.height}, {args.steps} steps, cfg {args.cfg}, "
          f"{args.sampler}")
    with common.data_folder() as data_dir:
        print(models.save_model(models.TEXT2VIDEO_MODEL, data_dir))
        measured = common.measure(data_dir, device, list(variants(args)), args.rounds, keep_outputs=True)
        common.print_report(measured, "pack", "reference")
    print(f"load average at the end: {common.load_average()}")


if __name__ == "__main__":
    main()
