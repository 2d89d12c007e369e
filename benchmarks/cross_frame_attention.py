"""Micro-benchmark: our cross-frame attention processor against diffusers' `CrossFrameAttnProcessor2_0`.

Times one whole processor call (projections, attention, output projection) on self-attention layers
shaped like Stable Diffusion 1.5's (8 heads; 320 channels at the first UNet level, 640 at the second), in
float32 on the CPU with torch's default thread count. Both processors run on the same layer and the same
input, alternating which one goes first in each round; the ratio is of the medians. The attention itself
(same arithmetic in both) dominates at many tokens, so the time ratio is best at few tokens and wide layers.

Peak memory: each processor runs once in a fresh subprocess (so neither inherits the other's freed
pages or allocator caches) that builds the layer and the input, reads its resident set size (RSS), resets
the kernel's RSS high-water mark (`/proc/self/clear_refs` = 5, Linux), calls the processor once and
reads the high-water mark again (`VmHWM`). The difference is the extra resident memory the call needed
at its peak: intermediates and the output, including the allocator's own slack; the input and the
weights are resident before and do not count.

Run: `python benchmarks/cross_frame_attention.py [--repeats N]` (not part of the test suite).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import subprocess
import sys
import time

import torch
from diffusers.models.attention_processor import Attention
from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
    CrossFrameAttnProcessor2_0,
)

from comfyui_text2video.attention import CrossFrameAttentionProcessor

HEADS = 8


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    groups: int
    frames_per_group: int
    latent_side: int  # tokens = latent_side ** 2
    channels: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.groups * self.frames_per_group, self.latent_side**2, self.channels)


CONFIGS = {
    config.name: config
    for config in (
        Config("level 1 at 256 px, 16 frames x 2 groups", groups=2, frames_per_group=16, latent_side=32, channels=320),
        Config("level 1 at 512 px, 8 frames x 2 groups", groups=2, frames_per_group=8, latent_side=64, channels=320),
        Config("level 2 at 512 px, 8 frames x 2 groups", groups=2, frames_per_group=8, latent_side=32, channels=640),
    )
}


def processor_for(kind: str, config: Config):
    if kind == "ours":
        return CrossFrameAttentionProcessor(config.frames_per_group)
    return CrossFrameAttnProcessor2_0(batch_size=config.groups)


def layer_and_input(config: Config) -> tuple[Attention, torch.Tensor]:
    torch.manual_seed(0)
    layer = Attention(query_dim=config.channels, heads=HEADS, dim_head=config.channels // HEADS, bias=False).eval()
    return layer, torch.randn(config.input_shape)


def call(layer: Attention, processor, frames: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return processor(layer, frames)


def time_config(config: Config, repeats: int) -> dict:
    layer, frames = layer_and_input(config)
    processors = {kind: processor_for(kind, config) for kind in ("ours", "reference")}
    torch.testing.assert_close(
        call(layer, processors["ours"], frames), call(layer, processors["reference"], frames), rtol=0, atol=1e-5
    )
    seconds = {kind: [] for kind in processors}
    for round_index in range(repeats):
        order = list(processors) if round_index % 2 == 0 else list(reversed(processors))
        for kind in order:
            start = time.perf_counter()
            call(layer, processors[kind], frames)
            seconds[kind].append(time.perf_counter() - start)
    return {kind: statistics.median(times) for kind, times in seconds.items()}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE).group(1))


def peak_extra_memory_in_this_process(kind: str, config: Config) -> int:
    """Bytes of RSS the call needs above what is resident before it."""
    layer, frames = layer_and_input(config)
    processor = processor_for(kind, config)
    resident_before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset VmHWM to the current RSS
    call(layer, processor, frames)
    return (_status_kib("VmHWM") - resident_before) * 1024


def peak_extra_memory(kind: str, config: Config) -> int:
    completed = subprocess.run(
        [sys.executable, __file__, "--peak-memory-of", kind, config.name],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per processor and config")
    parser.add_argument("--peak-memory-of", nargs=2, metavar=("KIND", "CONFIG"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.peak_memory_of:
        kind, config_name = arguments.peak_memory_of
        print(json.dumps(peak_extra_memory_in_this_process(kind, CONFIGS[config_name])))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, {HEADS} heads")
    for config in CONFIGS.values():
        median_seconds = time_config(config, arguments.repeats)
        peak_bytes = {kind: peak_extra_memory(kind, config) for kind in median_seconds}
        print(f"\n{config.name}: input {list(config.input_shape)} (frames, tokens, channels)")
        for kind in median_seconds:
            megabytes = peak_bytes[kind] / 2**20
            print(f"  {kind:9} median {median_seconds[kind]:7.3f} s   peak extra RSS {megabytes:8.1f} MiB")
        print(
            f"  ours / reference: time {median_seconds['ours'] / median_seconds['reference']:.2f}, "
            f"peak memory {peak_bytes['ours'] / peak_bytes['reference']:.2f}"
        )


if __name__ == "__main__":
    main()
