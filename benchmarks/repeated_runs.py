"""Benchmark: the same workflow run twice in one process (the headless runner, as a script or service would).

`example_workflows/api/text2video.json` on the mid-size ModelScope-layout model of `models.py`, run three times
in one process with `run_workflow`: the first run loads the model and encodes the prompts; the second reuses
both (the model cache, the encoded-prompt cache), so its time is the sampling, decoding and saving; the third
changes only the seed. Every run's time is split by node.

Run: `python benchmarks/repeated_runs.py [--steps 10 --frames 16]`. Not part of the test suite.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from comfyui_text2video import bridge
from comfyui_text2video.headless.runner import run_workflow

import common
import models

WORKFLOW = Path(__file__).resolve().parent.parent / "example_workflows" / "api" / "text2video.json"


def timed_run(overrides: list[str]) -> tuple[float, list[tuple[str, float]]]:
    """Total seconds and seconds per node of one run."""
    marks = []
    start = time.perf_counter()
    run_workflow(json.loads(WORKFLOW.read_text()), overrides, on_node=lambda line: marks.append(
        (line.split(" ", 1)[1], time.perf_counter())))
    end = time.perf_counter()
    per_node = [(name, (marks[i + 1][1] if i + 1 < len(marks) else end) - at) for i, (name, at) in enumerate(marks)]
    return end - start, per_node


def main() -> None:
    parser = common.argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    device = common.configure(args)
    common.print_environment(args, device)
    with common.data_folder() as data_dir:
        print(models.save_model(models.TEXT2VIDEO_MODEL, data_dir))
        bridge.set_folders(models=data_dir / "models", input=data_dir / "input", output=data_dir / "output")
        base = [f"1.model_name={models.TEXT2VIDEO_MODEL}", "1.dtype=float32", f"4.frames={args.frames}",
                f"4.width={args.size}", f"4.height={args.size}", f"5.steps={args.steps}"]
        print(f"{WORKFLOW.name}: {args.frames} frames {args.size}x{args.size}, {args.steps} steps")
        for label, seed in (("first run", 42), ("second run", 42), ("third run, new seed", 7)):
            with torch.no_grad():
                total, per_node = timed_run(base + [f"5.seed={seed}"])
            print(f"  {label:<20} {total:6.2f} s   " + ", ".join(f"{name} {s:.2f}" for name, s in per_node))
    print(f"load average at the end: {common.load_average()}")


if __name__ == "__main__":
    main()
