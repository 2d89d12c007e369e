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

import torch

import common
import models


def reference(handles, probe: common.Probe, settings: common.VideoSettings) -> torch.Tensor:
    from diffusers import TextToVideoSDPipeline

    with probe.stage("TextToVideoSDPipeline"):
        pipe = models.reference_pipeline(TextToVideoSDPipeline, handles, settings.sampler)
        return models.reference_video(pipe, settings)


def benchmark(args) -> common.Benchmark:
    variants = common.pack_against_reference(models.text_to_video, reference, common.VideoSettings.from_options(args))
    return common.Benchmark(
        [common.Comparison(models.mid_size(models.TEXT2VIDEO_MODEL), variants, args.rounds)],
        heading=f"text-to-video, {args.frames} frames {args.width}x{args.height}, {args.steps} steps, cfg {args.cfg}, "
                f"{args.sampler}")


def main() -> None:
    parser = common.argument_parser(__doc__.splitlines()[0])
    common.add_video_options(parser, frames=16, steps=10, cfg=9.0, seed=42)
    common.run(parser, benchmark)


if __name__ == "__main__":
    main()
