"""What the benchmark scripts share: measured calls in fresh processes, a time and memory probe, reports.

A script declares its options (`argument_parser`, `add_video_options`) and, from the parsed options, its
`Benchmark`: comparisons of variants (a measured call and its settings, e.g. the pack's graph and the reference
pipeline) on models it builds; `run` does the rest.

How a figure is measured
------------------------
Every measured call runs in a fresh Python process: the script starts itself again with `--worker VARIANT`.
The worker loads the model, warms up with one small call of the same variant (lazy imports, kernel
selection and thread-pool start-up are not measured), makes the measured call once under `torch.no_grad`
and reports each stage's time and memory as one JSON line. The parent runs the variants interleaved
(A B, B A, A B, ...) so that changes in the machine's load hit both sides alike, and reports medians.

Peak memory is the most memory a call needed above what was in use right before it (the model, the inputs
and what the warm-up left behind do not count), stage by stage:

- CPU: resident set size (RSS). Before the call the allocator gives the pages of freed blocks back to the
  system (`malloc_trim`, glibc), so the call cannot reuse pages the warm-up left behind without them being
  counted. Before each stage the kernel's RSS high-water mark is reset to the current RSS
  (`echo 5 > /proc/self/clear_refs`, Linux); after the stage the high-water mark (`VmHWM`) minus the RSS
  before the call is that stage's peak: exact, no sampling. Two figures:
  - "RSS peak", with glibc's allocator as it comes: what the machine has to provide. glibc keeps freed
    blocks of up to 32 MiB for reuse instead of returning them, so this includes memory that is free but
    held (often 50-100% on top at these sizes) and varies from run to run with the allocation order.
  - "live peak", from one more run per variant with `MALLOC_MMAP_THRESHOLD_=131072`, which makes glibc
    return every freed block above 128 KiB at once: the RSS then follows the memory the code keeps alive
    (its tensors). Use it to see what the code needs; its times are not used (page faults slow it down).
- CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus the memory allocated
  before the call: tensors only, the caching allocator's reserve is not counted (so no second run).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import diffusers
import torch

from comfyui_text2video import bridge

MIB = 2**20
LIVE_MEMORY_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": "131072"}
"""glibc returns freed blocks above 128 KiB to the system at once (and no longer raises that threshold)."""


# --------------------------------------------------------------------------- arguments and set-up


def argument_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every benchmark has (the worker options are hidden)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads. One by default: on a machine shared with other work, several threads "
                             "spend most of their time waiting for each other and the times scatter by 10x; on an "
                             "idle machine give it the number of cores")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--save-output", help=argparse.SUPPRESS)
    return parser


def configure(args: argparse.Namespace) -> torch.device:
    """Threads, device and (in a worker) the data folders; returns the compute device."""
    torch.set_num_threads(args.threads)
    bridge.set_device(args.device)
    if args.data_dir:
        root = Path(args.data_dir)
        bridge.set_folders(models=root / "models", input=root / "input", output=root / "output")
    return bridge.compute_device()


@contextlib.contextmanager
def data_folder() -> Iterator[Path]:
    """A temporary data root with ComfyUI's layout (models, input, output) for one benchmark run."""
    with tempfile.TemporaryDirectory(prefix="t2v-benchmark-") as root:
        yield Path(root)


def load_average() -> str:
    return "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def print_environment(args: argparse.Namespace, device: torch.device) -> None:
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, device {device}, "
          f"{args.threads} torch threads, {os.cpu_count()} cores, float32")
    print(f"load average (1, 5, 15 min) at the start: {load_average()}")


def add_video_options(options, *, frames: int, steps: int, cfg: float, seed: int, height: int = 128,
                      sampler_help: str = "a T2VSampler sampler_name", frames_help: str | None = None,
                      steps_help: str | None = None) -> None:
    """The options of `VideoSettings` with this benchmark's defaults, and `--rounds`, on a parser or group."""
    options.add_argument("--frames", type=int, default=frames, help=frames_help)
    options.add_argument("--width", type=int, default=128)
    options.add_argument("--height", type=int, default=height)
    options.add_argument("--steps", type=int, default=steps, help=steps_help)
    options.add_argument("--cfg", type=float, default=cfg)
    options.add_argument("--sampler", default="ddim", help=sampler_help)
    options.add_argument("--seed", type=int, default=seed)
    options.add_argument("--rounds", type=int, default=3, help="measured calls per side")


@dataclasses.dataclass(frozen=True)
class VideoSettings:
    """What a measured video call is asked for; a benchmark with more settings extends it."""

    frames: int
    width: int
    height: int
    steps: int
    cfg: float
    sampler: str
    seed: int

    @classmethod
    def from_options(cls, args: argparse.Namespace, **more):
        """The settings `add_video_options` parsed, and `more` fields of a subclass."""
        return cls(args.frames, args.width, args.height, args.steps, args.cfg, args.sampler, args.seed, **more)

    def warm_up(self):
        """The same call, small: every code path runs once before the measured call."""
        return dataclasses.replace(self, frames=2, width=64, height=64, steps=1)


# --------------------------------------------------------------------------- the probe (worker side)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE).group(1)) * 1024


class _ResidentMemory:
    """The process's resident set size and its high-water mark (Linux, glibc)."""

    def release_free_pages(self) -> None:
        """Give the pages of freed blocks back to the system, so the call cannot reuse them unseen."""
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)

    def in_use(self) -> int:
        return _status_bytes("VmRSS")

    def peak(self) -> int:
        return _status_bytes("VmHWM")

    def reset_peak(self) -> None:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")

    def synchronize(self) -> None:
        pass


class _CudaMemory:
    """Memory allocated to tensors on one CUDA device, and its peak."""

    def __init__(self, device: torch.device):
        self.device = device

    def release_free_pages(self) -> None:
        """Nothing to do: the allocator's cached blocks do not count as allocated."""

    def in_use(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device)

    def reset_peak(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One timed part of a measured call; memory relative to what was in use right before the call."""

    name: str
    seconds: float  # wall-clock
    cpu_seconds: float  # CPU time of all the process's threads: single-threaded, robust to other load
    peak_bytes: int
    after_bytes: int  # in use at the end of the stage: its outputs (on CPU also freed blocks the allocator keeps)


class Probe:
    """Times the stages of one call and tracks their memory above what was in use when the first one began.

    Inputs a call prepares before its first stage (what an earlier node would have produced) do not count.
    """

    def __init__(self, device: torch.device):
        self._memory = _CudaMemory(device) if device.type == "cuda" else _ResidentMemory()
        self._baseline: int | None = None
        self.stages: list[Stage] = []

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._baseline is None:
            self._memory.release_free_pages()
            self._baseline = self._memory.in_use()
        self._memory.reset_peak()
        start, cpu_start = time.perf_counter(), time.process_time()
        yield
        self._memory.synchronize()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        self.stages.append(Stage(name, seconds, cpu_seconds, self._memory.peak() - self._baseline,
                                 self._memory.in_use() - self._baseline))


Call = Callable[[tuple, Probe, object], "torch.Tensor | None"]
"""A variant's measured call: `(model handles, probe, settings) -> output to compare, or None`. It times its
stages with `probe.stage`; the settings have a `warm_up()` method giving the same call at a small size."""


def run_worker(args: argparse.Namespace, device: torch.device, handles: tuple,
               variants: dict[str, tuple[Call, object]]) -> None:
    """Worker process: warm up, make the measured call of variant `args.worker`, print its stages as JSON and
    save its output."""
    call, settings = variants[args.worker]
    with torch.no_grad():
        call(handles, Probe(device), settings.warm_up())
        probe = Probe(device)
        output = call(handles, probe, settings)
    if args.save_output and output is not None:
        torch.save(output.cpu(), args.save_output)
    print(json.dumps([dataclasses.asdict(stage) for stage in probe.stages]))


# --------------------------------------------------------------------------- runs (parent side)


@dataclasses.dataclass(frozen=True)
class Run:
    """One measured call of a variant, as its worker reported it."""

    stages: tuple[Stage, ...]
    load_average: float  # 1-minute load average when the run ended
    output: Path | None

    @property
    def seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    @property
    def cpu_seconds(self) -> float:
        return sum(stage.cpu_seconds for stage in self.stages)

    @property
    def peak_bytes(self) -> int:
        return max(stage.peak_bytes for stage in self.stages)


def _run_in_fresh_process(data_dir: Path, variant: str, output: Path | None, environment: dict[str, str]) -> Run:
    command = [sys.executable, sys.argv[0], *sys.argv[1:], "--worker", variant, "--data-dir", str(data_dir)]
    if output is not None:
        command += ["--save-output", str(output)]
    completed = subprocess.run(command, capture_output=True, text=True,
                               env={**os.environ, "T2V_NO_PROGRESS": "1", **environment})
    if completed.returncode != 0:
        raise RuntimeError(f"the worker for '{variant}' failed:\n{completed.stderr[-4000:]}")
    stages = tuple(Stage(**stage) for stage in json.loads(completed.stdout.strip().splitlines()[-1]))
    return Run(stages, os.getloadavg()[0], output if output is not None and output.exists() else None)


def run_interleaved(data_dir: Path, variants: list[str], rounds: int, keep_outputs: bool = False,
                     environment: dict[str, str] | None = None, label: str = "") -> dict[str, list[Run]]:
    """`rounds` fresh-process runs of every variant, interleaved; the first round's outputs kept if asked."""
    runs: dict[str, list[Run]] = {variant: [] for variant in variants}
    for round_index in range(rounds):
        order = variants if round_index % 2 == 0 else variants[::-1]
        for variant in order:
            output = data_dir / f"output-{variants.index(variant)}.pt" if keep_outputs and round_index == 0 else None
            run = _run_in_fresh_process(data_dir, variant, output, environment or {})
            runs[variant].append(run)
            print(f"  {label}round {round_index + 1}/{rounds}  {variant:<26} {run.seconds:8.2f} s  "
                  f"peak {run.peak_bytes / MIB:8.1f} MiB  (load {run.load_average:.1f})", flush=True)
    return runs


@dataclasses.dataclass(frozen=True)
class Measurements:
    """A variant's timed runs (the allocator as it comes) and, on CPU, its live-memory run."""

    timed: list[Run]
    live: Run | None

    @property
    def median_seconds(self) -> float:
        return statistics.median(run.seconds for run in self.timed)

    @property
    def fastest_seconds(self) -> float:
        return min(run.seconds for run in self.timed)

    @property
    def median_cpu_seconds(self) -> float:
        return statistics.median(run.cpu_seconds for run in self.timed)

    @property
    def median_peak_bytes(self) -> float:
        return statistics.median(run.peak_bytes for run in self.timed)


def measure(data_dir: Path, device: torch.device, variants: list[str], rounds: int,
            keep_outputs: bool = False) -> dict[str, Measurements]:
    """Timed runs of `variants`, interleaved, then (on CPU) one live-memory run of each."""
    timed = run_interleaved(data_dir, variants, rounds, keep_outputs)
    if device.type == "cuda":
        return {variant: Measurements(timed[variant], None) for variant in variants}
    live = run_interleaved(data_dir, variants, 1, environment=LIVE_MEMORY_ENVIRONMENT, label="live memory, ")
    return {variant: Measurements(timed[variant], live[variant][0]) for variant in variants}


# --------------------------------------------------------------------------- reports


def print_report(measurements: dict[str, Measurements], numerator: str, denominator: str) -> None:
    """Per variant time and memory, the ratios `numerator / denominator`, the outputs' difference (when both
    were kept) and, for variants with several stages, where the time and memory went."""
    top, bottom = measurements[numerator], measurements[denominator]
    live = top.live is not None
    print()
    rows = []
    for variant, measured in measurements.items():
        times = [run.seconds for run in measured.timed]
        peaks = [run.peak_bytes / MIB for run in measured.timed]
        rows.append([variant, str(len(times)), f"{measured.median_seconds:.2f} ({min(times):.2f}-{max(times):.2f})",
                     f"{measured.median_cpu_seconds:.2f}",
                     f"{measured.median_peak_bytes / MIB:.1f} ({min(peaks):.0f}-{max(peaks):.0f})"]
                    + ([f"{measured.live.peak_bytes / MIB:.1f}"] if live else []))
    _print_table(["variant", "runs", "wall s: median (min-max)", "CPU s", "peak MiB: median (min-max)"]
                 + (["live peak MiB"] if live else []), rows)
    ratios = [f"wall time {top.median_seconds / bottom.median_seconds:.2f} "
              f"(fastest runs {top.fastest_seconds / bottom.fastest_seconds:.2f})",
              f"CPU time {top.median_cpu_seconds / bottom.median_cpu_seconds:.2f}",
              f"{'RSS ' if live else ''}peak memory {top.median_peak_bytes / bottom.median_peak_bytes:.2f}"]
    if live:
        ratios.append(f"live peak memory {top.live.peak_bytes / bottom.live.peak_bytes:.2f}")
    print(f"  {numerator} / {denominator} (medians): " + ", ".join(ratios))
    first, second = top.timed[0].output, bottom.timed[0].output
    if first is not None and second is not None:
        difference = (torch.load(first, weights_only=True) - torch.load(second, weights_only=True)).abs().max().item()
        print(f"  outputs: max abs difference {difference:.2e} (pixels in 0..1)")
    for variant, measured in measurements.items():
        if len(measured.timed[0].stages) > 1:
            _print_stages(variant, measured)


def _print_stages(variant: str, measured: Measurements) -> None:
    """Where the first timed run's time and memory went, stage by stage (and the live-memory run's memory)."""
    print(f"  {variant}, by stage (MiB above the memory in use before the call):")
    live = measured.live.stages if measured.live is not None else None
    rows = []
    for index, stage in enumerate(measured.timed[0].stages):
        memory = [live[index].peak_bytes, live[index].after_bytes] if live else [stage.after_bytes]
        rows.append([stage.name, f"{stage.seconds:.2f}", f"{stage.cpu_seconds:.2f}", f"{stage.peak_bytes / MIB:.1f}",
                     *(f"{value / MIB:.1f}" for value in memory)])
    _print_table(["  stage", "wall s", "CPU s", "peak MiB"] + (["live peak", "live after"] if live else ["after"]),
                 [["  " + row[0], *row[1:]] for row in rows])


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    """Columns as wide as their widest cell; the first left-aligned, the others right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        cells = [cell.rjust(width) if index else cell.ljust(width) for index, (cell, width) in
                 enumerate(zip(row, widths))]
        print("  " + "  ".join(cells))


# --------------------------------------------------------------------------- the driver


@dataclasses.dataclass(frozen=True, eq=False)
class Models:
    """What measured calls run on: built into the data folder once by the parent, loaded by every worker."""

    save: Callable[[Path], list[str]]  # builds and saves them (and any input files), returns lines describing them
    load: Callable[[], tuple]  # their handles


def pack_against_reference(pack: Call, reference: Call, settings) -> dict[str, tuple[Call, object]]:
    """The two variants of a parity benchmark, on the same settings."""
    return {"pack": (pack, settings), "reference": (reference, settings)}


def measure_and_report(data_dir: Path, device: torch.device, comparison: Comparison) -> None:
    """Timed runs of the comparison's variants and (on CPU) their live-memory runs, then `print_report`."""
    names = list(comparison.variants)
    measured = measure(data_dir, device, names, comparison.rounds, comparison.keep_outputs)
    print_report(measured, *(comparison.ratio or names[:2]))


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Variants measured against each other on the same models, interleaved, and reported together."""

    models: Models
    variants: dict[str, tuple[Call, object]]
    rounds: int
    title: str = ""  # printed after a blank line before the runs
    keep_outputs: bool = True  # compare the outputs (not for runs of different lengths)
    ratio: tuple[str, str] | None = None  # the ratios' numerator and denominator; the first two variants if None
    report: Callable[[Path, torch.device, Comparison], None] = measure_and_report


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A benchmark script's comparisons, and a heading printed before their models are built."""

    comparisons: list[Comparison]
    heading: str = ""


def run(parser: argparse.ArgumentParser, declare: Callable[[argparse.Namespace], Benchmark]) -> None:
    """A benchmark script's main: in a worker the measured call asked for; otherwise the environment, the heading,
    and each comparison's models (each set once), title, runs and report."""
    args = parser.parse_args()
    device = configure(args)
    benchmark = declare(args)
    if args.worker:
        comparison = next(comparison for comparison in benchmark.comparisons if args.worker in comparison.variants)
        run_worker(args, device, comparison.models.load(), comparison.variants)
        return

    print_environment(args, device)
    if benchmark.heading:
        print(benchmark.heading)
    with data_folder() as data_dir:
        saved: list[Models] = []
        for comparison in benchmark.comparisons:
            if comparison.models not in saved:
                print("\n".join(comparison.models.save(data_dir)))
                saved.append(comparison.models)
            if comparison.title:
                print(f"\n{comparison.title}")
            comparison.report(data_dir, device, comparison)
    print(f"load average at the end: {load_average()}")
