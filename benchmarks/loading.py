"""Benchmark: loading a UNet3D with accelerate (weights straight into empty modules) against without.

Two random-weight ModelScope-layout UNet3Ds are written once to a temporary folder, in float16 as the real
checkpoints ship, both as safetensors and as a pickled `.bin` (zeroscope's repositories ship only `.bin`):

- `mid`: the benchmark model of `models.py` (a fifth of the real widths);
- `modelscope`: the real ModelScope / zeroscope UNet configuration (1.41 billion parameters, 2.8 GB in float16).

Each is loaded as float16 by the pack's loader (`T2VModelLoader`'s code) in a fresh process:

- `before`: as without accelerate: diffusers builds the model with a random initialisation in float32 and
  copies the weights in (`low_cpu_mem_usage=False`, its fallback when accelerate is missing), and so does the
  pack's `.bin` path;
- `after`: as now, with accelerate installed: the modules are built empty (meta device) and the loaded
  weights become their parameters.

Reported: load time and peak RSS above the process's RSS before the load (the weights themselves are 2 bytes
per parameter). The big model needs about 12 GB free for the `before` runs.

Run: `nice python benchmarks/loading.py [--sizes mid modelscope] [--rounds 2]`. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import common
import models

SIZES = ("mid", "modelscope")
FORMATS = ("safetensors", "bin")
MODES = ("before", "after")


def _modelscope_unet() -> torch.nn.Module:
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel(  # ModelScope text-to-video-ms-1.7b's unet/config.json
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
        up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
        cross_attention_dim=1024, attention_head_dim=64, norm_num_groups=32)


def write_unets(root: Path, sizes) -> dict[str, int]:
    """Each size's UNet as `root/SIZE/safetensors` and `root/SIZE/bin` (float16); returns parameter counts."""
    counts = {}
    for size in sizes:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(models.BUILD_SEED)
            unet = _modelscope_unet() if size == "modelscope" else models._unet3d(models.RECIPES[
                models.TEXT2VIDEO_MODEL].text_width)
        unet = unet.to(torch.float16)
        counts[size] = sum(p.numel() for p in unet.parameters())
        unet.save_pretrained(root / size / "safetensors", safe_serialization=True)
        unet.save_pretrained(root / size / "bin", safe_serialization=False)
        del unet
    return counts


def worker(folder: Path, mode: str) -> None:
    """Load the UNet in `folder` as float16 through the pack's loader; print seconds and peak RSS as JSON."""
    from diffusers import UNet3DConditionModel
    from diffusers.models import modeling_utils

    from comfyui_text2video.models import loading

    if mode == "before":
        loading._HAS_ACCELERATE = False
        modeling_utils._LOW_CPU_MEM_USAGE_DEFAULT = False
    probe = common._ResidentMemory()
    probe.release_free_pages()
    baseline = probe.in_use()
    probe.reset_peak()
    start = time.perf_counter()
    unet = loading._load_component(UNet3DConditionModel, folder, torch.float16, "torch_dtype")
    seconds = time.perf_counter() - start
    weights = sum(p.numel() * p.element_size() for p in unet.parameters())
    print(json.dumps({"seconds": seconds, "peak": probe.peak() - baseline, "weights": weights}))


def measure(folder: Path, mode: str) -> dict:
    completed = subprocess.run([sys.executable, sys.argv[0], "--worker", mode, "--folder", str(folder)],
                               capture_output=True, text=True)
    if completed.returncode:
        raise RuntimeError(f"the {mode} worker failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.worker:
        worker(args.folder, args.worker)
        return
    print(f"torch {torch.__version__}, load average {common.load_average()}")
    with tempfile.TemporaryDirectory(prefix="t2v-loading-") as root:
        counts = write_unets(Path(root), args.sizes)
        for size in args.sizes:
            print(f"\n{size}: UNet3D with {counts[size] / 1e9:.3f} billion parameters, float16 on disk")
            for file_format in FORMATS:
                results = {mode: [] for mode in MODES}
                for round_index in range(args.rounds):
                    for mode in (MODES if round_index % 2 == 0 else MODES[::-1]):
                        results[mode].append(measure(Path(root) / size / file_format, mode))
                for mode in MODES:
                    best = min(results[mode], key=lambda r: r["seconds"])
                    print(f"  {file_format:<11} {mode:<6}  load {best['seconds']:6.2f} s (runs: "
                          + ", ".join(f"{r['seconds']:.2f}" for r in results[mode])
                          + f")  peak RSS {best['peak'] / common.MIB:7.0f} MiB for "
                            f"{best['weights'] / common.MIB:.0f} MiB of weights")
                speedup = min(r["seconds"] for r in results["before"]) / min(r["seconds"] for r in results["after"])
                print(f"  {file_format:<11} after is {speedup:.1f}x faster (fastest runs)")
    print(f"load average at the end: {common.load_average()}")


if __name__ == "__main__":
    os.environ.setdefault("T2V_NO_PROGRESS", "1")
    main()
