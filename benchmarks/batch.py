"""Benchmark: batch rendering, one process against two (`accelerate launch --multi_gpu --num_processes 2`,
CPU processes on a machine without GPUs), and what a job costs beyond sampling.

The batch is 8 jobs (4 prompts x 2 seeds) of the text-to-video example on `builtin:tiny-text2video`, written as
lossless WebP. Each run is a fresh batch into a fresh output folder; the two sides alternate (1, 2, 2, 1, ...)
and the table gives medians. "Wall" is the whole command, start-up included (imports, one model load a process,
validation of all 8 jobs); "jobs" is from the first job's start to the last job's end, read from the workers'
timers. Each of the two processes has one torch thread (torchrun's default), the single process `--threads`
(one by default, as the other benchmarks). Per job, every node's time is measured around the node's function;
what a job costs beyond sampling is its manifest time minus the sampler's, split into the other nodes (text
encoding, VAE decode, the video file) and the batch's own work (preparing the job's workflow, looking for
leftovers, the runner) plus the manifest append.

Run: `python benchmarks/batch.py` (about 10 minutes on a 2-core machine at load average 27); `--steps`,
`--frames`, `--size`, `--rounds` and `--threads` change the work. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "example_workflows" / "api" / "text2video.json"
PROMPTS = ["a red circle moving left", "a blue square moving up", "a green triangle moving down",
           "a red square moving right"]
JOBS = [{"2.text": prompt, "5.seed": seed} for seed in (1, 2) for prompt in PROMPTS]
SAMPLER = "T2VSampler"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="width and height")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the single process (each of the two has one). One by default: on a "
                             "machine shared with other work several threads mostly wait for each other (10x and "
                             "more slower); on an idle machine give it the number of cores")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # the timings file of a worker
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", help=argparse.SUPPRESS)
    return parser.parse_args()


def batch_arguments(args: argparse.Namespace) -> list[str]:
    settings = {"4.width": args.size, "4.height": args.size, "4.frames": args.frames, "5.steps": args.steps,
                "7.format": "webp", "7.quality": 100}
    overrides = [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]
    return [str(WORKFLOW), "--jobs", args.jobs, "--output-dir", args.output_dir, *overrides]


# --------------------------------------------------------------------------- worker (every batch process)


def worker(args: argparse.Namespace) -> int:
    """Run the batch command in this process with timers around every node function, each job and the
    manifest append; write them to `<worker>.<rank>.json`."""
    from comfyui_text2video import nodes
    from comfyui_text2video.headless import batch, cli

    job_times: list[dict] = []
    appends: list[float] = []
    current: collections.Counter = collections.Counter()

    def timed(function, name):
        def wrapper(*arguments, **keywords):
            started = time.perf_counter()
            try:
                return function(*arguments, **keywords)
            finally:
                current[name] += time.perf_counter() - started
        return wrapper

    for class_type, node_class in nodes.NODE_CLASS_MAPPINGS.items():
        setattr(node_class, node_class.FUNCTION, timed(getattr(node_class, node_class.FUNCTION), class_type))
    append = batch.Manifest.append

    def timed_append(*arguments, **keywords):
        started = time.perf_counter()
        append(*arguments, **keywords)
        appends.append(time.perf_counter() - started)

    run_job = batch.run_job

    def timed_job(*arguments, **keywords):
        current.clear()
        started = time.perf_counter()
        record, failure = run_job(*arguments, **keywords)
        job_times.append({"job": record["job"], "start": started, "end": time.perf_counter(),
                          "seconds": record["seconds"], "nodes": dict(current)})
        return record, failure

    batch.Manifest.append, batch.run_job = timed_append, timed_job
    status = cli.main(["batch", *batch_arguments(args)])
    for entry, seconds in zip(job_times, appends):  # each job appends once, after its own timer stopped
        entry["append"] = seconds
    rank = int(os.environ.get("RANK", 0))
    Path(f"{args.worker}.{rank}.json").write_text(json.dumps({"jobs": job_times, "status": status}))
    return status


# --------------------------------------------------------------------------- parent


def run_batch(args: argparse.Namespace, processes: int, root: Path, name: str) -> dict:
    """One fresh batch; its wall time, job span, per-job timings and the load average after it."""
    jobs = root / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(job) + "\n" for job in JOBS))
    timings = root / f"{name}-timings"
    own = [sys.argv[0], "--worker", str(timings), "--jobs", str(jobs), "--output-dir", str(root / name),
           "--steps", str(args.steps), "--frames", str(args.frames), "--size", str(args.size)]
    if processes == 1:
        command = [sys.executable, *own]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", f"--num_processes={processes}",
                   "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", *own]
    environment = {**os.environ, "T2V_DATA_DIR": str(root / "data"), "T2V_NO_PROGRESS": "1",
                   "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(args.threads if processes == 1 else 1)}
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"the {processes}-process batch failed:\n{completed.stderr[-4000:]}")
    jobs_timed = [job for rank in range(processes)
                  for job in json.loads(Path(f"{timings}.{rank}.json").read_text())["jobs"]]
    assert sorted(job["job"] for job in jobs_timed) == list(range(1, len(JOBS) + 1)), jobs_timed
    span = max(job["end"] for job in jobs_timed) - min(job["start"] for job in jobs_timed)
    return {"wall": wall, "span": span, "jobs": jobs_timed, "load": os.getloadavg()[0]}


def main() -> int:
    args = parse_arguments()
    if args.worker:
        return worker(args)
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} cores, builtin:tiny-text2video, {len(JOBS)} jobs of "
          f"{args.frames} frames {args.size}x{args.size}, {args.steps} steps; torch threads: {args.threads} in the "
          "single process, 1 in each of the two")
    print(f"load average (1, 5, 15 min) at the start: {common.load_average()}")
    runs: dict[int, list[dict]] = {1: [], 2: []}
    with common.data_folder() as root:
        for round_index in range(args.rounds):
            for processes in ((1, 2) if round_index % 2 == 0 else (2, 1)):
                run = run_batch(args, processes, root, f"round{round_index}-{processes}")
                runs[processes].append(run)
                print(f"  round {round_index + 1}/{args.rounds}  {processes} process(es)  wall {run['wall']:7.2f} s  "
                      f"jobs {run['span']:7.2f} s  (load {run['load']:.1f})", flush=True)
    print(f"load average at the end: {common.load_average()}")
    print_throughput(runs)
    print_overhead(runs[1])
    return 0


def print_throughput(runs: dict[int, list[dict]]) -> None:
    rows = []
    for processes, measured in runs.items():
        wall = statistics.median(run["wall"] for run in measured)
        span = statistics.median(run["span"] for run in measured)
        rows.append((processes, wall, span))
    print("\n  processes  wall s  jobs/min (wall)  jobs s  jobs/min (jobs)")
    for processes, wall, span in rows:
        print(f"  {processes:>9}  {wall:6.2f}  {60 * len(JOBS) / wall:15.2f}  {span:6.2f}  "
              f"{60 * len(JOBS) / span:15.2f}")
    (_, wall_1, span_1), (_, wall_2, span_2) = rows
    print(f"  throughput 2 processes / 1 process: {wall_1 / wall_2:.2f}x (wall), {span_1 / span_2:.2f}x (jobs)")


def print_overhead(single_process_runs: list[dict]) -> None:
    """Per job, medians over the single-process runs' jobs (the first job of a run, with its warm-up, left out)."""
    jobs = [job for run in single_process_runs for job in sorted(run["jobs"], key=lambda job: job["start"])[1:]]

    def median_ms(value) -> float:
        return 1000 * statistics.median(value(job) for job in jobs)

    rows = [("job (its manifest seconds)", median_ms(lambda job: job["seconds"])),
            (f"sampling ({SAMPLER})", median_ms(lambda job: job["nodes"].get(SAMPLER, 0.0))),
            ("beyond sampling (+ manifest append)",
             median_ms(lambda job: job["seconds"] - job["nodes"].get(SAMPLER, 0.0) + job["append"]))]
    for name in sorted({name for job in jobs for name in job["nodes"]} - {SAMPLER}):
        rows.append((f"  {name}", median_ms(lambda job: job["nodes"].get(name, 0.0))))
    rows += [("  batch: prepare job, leftovers, runner",
              median_ms(lambda job: job["seconds"] - sum(job["nodes"].values()))),
             ("  batch: manifest append (with fsync)", median_ms(lambda job: job["append"]))]
    print(f"\n  per job (1 process, medians of {len(jobs)} jobs, each run's first left out)")
    for label, milliseconds in rows:
        print(f"  {label:<42} {milliseconds:9.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
