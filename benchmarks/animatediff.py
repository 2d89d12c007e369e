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

from pathlib import Path

import torch

from comfyui_text2video import bridge
from comfyui_text2video.models.loading import load_model
from comfyui_text2video.models.motion_adapter import load_motion_adapter
from comfyui_text2video.nodes.animatediff import T2VApplyMotionAdapter

import common
import models

ADAPTER = "benchmark-motion-adapter"


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


MODELS = common.Models(lambda data_dir: [models.save_model(models.IMAGE_MODEL, data_dir), save_adapter(data_dir)],
                       lambda: (*load_model(models.IMAGE_MODEL, "float32"), load_motion_adapter(ADAPTER)))


def pack(handles, probe: common.Probe, settings: common.VideoSettings) -> torch.Tensor:
    model, clip, vae, adapter = handles
    with probe.stage("T2VApplyMotionAdapter"):
        model = T2VApplyMotionAdapter().patch(model, adapter)[0]
    return models.text_to_video((model, clip, vae), probe, settings)


def reference(handles, probe: common.Probe, settings: common.VideoSettings) -> torch.Tensor:
    from diffusers import AnimateDiffPipeline

    model, clip, vae, adapter = handles
    with probe.stage("AnimateDiffPipeline"):
        pipe = models.reference_pipeline(AnimateDiffPipeline, (model, clip, vae), settings.sampler,
                                         motion_adapter=adapter.module)
        return models.reference_video(pipe, settings)


def benchmark(args) -> common.Benchmark:
    variants = common.pack_against_reference(pack, reference, common.VideoSettings.from_options(args))
    return common.Benchmark([common.Comparison(MODELS, variants, args.rounds)],
                            heading=f"AnimateDiff text-to-video, {args.frames} frames {args.width}x{args.height}, "
                                    f"{args.steps} steps, cfg {args.cfg}, {args.sampler}")


def main() -> None:
    parser = common.argument_parser(__doc__.splitlines()[0])
    common.add_video_options(parser, frames=16, steps=10, cfg=7.5, seed=42)
    common.run(parser, benchmark)


if __name__ == "__main__":
    main()
