"""`python -m comfyui_text2video batch WORKFLOW.json --jobs JOBS`: one workflow rendered once per job.

A job is one row of input overrides (`NODE_ID.INPUT` columns of a CSV file, or keys of one JSONL line).
Every job is validated before any runs. Under `accelerate launch` the jobs left to do are split between
the processes (`PartialState.split_between_processes`), each on its own device with its models loaded once.
Each finished job appends one line to `manifest.jsonl` in the output folder; a rerun skips the jobs whose
recorded files are all there, so an interrupted batch continues where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from .. import bridge
from ..media import video_io
from .exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK
from .runner import execute
from .workflow import InvalidWorkflow, Override, PreparedWorkflow, WorkflowError, prepare_workflow, unwrap_value
from .workflow_file import read_workflow_file

try:
    import fcntl
except ImportError:  # Windows: appends of one write each are whole there too, without a lock across machines
    fcntl = None

MANIFEST_NAME = "manifest.jsonl"
JOB_SUFFIX = "_job{index:05d}"
"""Appended to every output node's `filename_prefix`, so jobs never write to the same names."""

BARRIER_TIMEOUT = datetime.timedelta(days=2)
"""How long processes that finished their share wait for the others (the slowest share's last job)."""


class JobsError(Exception):
    """The jobs file cannot be read or some job cannot run; `problems` lists every reason."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class Job:
    index: int  # 1-based position in the jobs file
    line: int
    overrides: tuple[Override, ...]

    def __str__(self) -> str:
        return f"job {self.index} (line {self.line})"


# --------------------------------------------------------------------------- reading jobs


def _override(key: str, value: Any, where: str) -> Override:
    """The override of `key` (`NODE_ID.INPUT`) to a JSON value; text stays text."""
    try:
        parsed = Override.parse(f"{key}=0")
    except WorkflowError:
        raise JobsError([f"{where}: {key!r} is not NODE_ID.INPUT"]) from None
    text = value if isinstance(value, str) else json.dumps(value)
    return Override(parsed.node_id, parsed.input_name, value, text)


def _read_csv(path: Path) -> list[Job]:
    """Header `NODE_ID.INPUT` columns; each cell read as `--set` reads a value; an empty cell overrides nothing."""
    problems, jobs = [], []
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        header = [column.strip() for column in next(reader, [])]
        for column, count in Counter(header).items():
            if count > 1:
                problems.append(f"header: column {column!r} appears {count} times")
        for column in header:
            try:
                _override(column, 0, "header")
            except JobsError as exc:
                problems.extend(exc.problems)
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                problems.append(f"line {reader.line_num}: {len(row)} cells, but the header names {len(header)} "
                                "columns")
                continue
            if not problems:
                overrides = [Override.parse(f"{column}={cell}") for column, cell in zip(header, row) if cell]
                jobs.append(Job(len(jobs) + 1, reader.line_num, tuple(overrides)))
    if problems:
        raise JobsError(problems)
    return jobs


def _read_jsonl(path: Path) -> list[Job]:
    """One JSON object of `{"NODE_ID.INPUT": value}` a line; blank lines are skipped."""
    problems, jobs = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            problems.append(f"line {number}: not JSON ({exc})")
            continue
        if not isinstance(row, dict):
            problems.append(f"line {number}: expected an object of NODE_ID.INPUT keys, got {type(row).__name__}")
            continue
        try:
            overrides = tuple(_override(key, value, f"line {number}") for key, value in row.items())
        except JobsError as exc:
            problems.extend(exc.problems)
            continue
        jobs.append(Job(len(jobs) + 1, number, overrides))
    if problems:
        raise JobsError(problems)
    return jobs


def read_jobs(path: Path) -> list[Job]:
    """The jobs of a `.csv` or `.jsonl` file; raises `JobsError` naming every unreadable line."""
    readers = {".csv": _read_csv, ".jsonl": _read_jsonl, ".ndjson": _read_jsonl}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise JobsError([f"{path}: the jobs file must end in .csv or .jsonl"])
    try:
        jobs = reader(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise JobsError([f"cannot read jobs file {path}: {exc}"]) from exc
    except JobsError as exc:
        raise JobsError([f"{path} {problem}" for problem in exc.problems]) from None
    if not jobs:
        raise JobsError([f"{path}: has no jobs"])
    return jobs


# --------------------------------------------------------------------------- checking and preparing jobs


def _output_nodes(prepared: PreparedWorkflow) -> list[str]:
    return [node_id for node_id in prepared.order
            if prepared.specs.get(prepared.prompt[node_id]["class_type"]).is_output]


def _prefix_problems(prepared: PreparedWorkflow) -> list[str]:
    """Output nodes whose file names a batch cannot make job-specific."""
    return [f"node {node_id} ({prepared.prompt[node_id]['class_type']}): a batch gives each job its own file names "
            "through filename_prefix; set it to a value, not a link"
            for node_id in _output_nodes(prepared)
            if not isinstance(prepared.prompt[node_id]["inputs"].get("filename_prefix"), str)]


def recorded_overrides(prepared: PreparedWorkflow, overrides: list[Override]) -> dict[str, Any]:
    """`{"NODE_ID.INPUT": value}` as the job runs them (converted to the inputs' types), for the manifest."""
    return {f"{o.node_id}.{o.input_name}": unwrap_value(prepared.prompt[o.node_id]["inputs"][o.input_name])
            for o in overrides}


def check_jobs(workflow: Any, base: list[Override], jobs: list[Job]) -> list[dict[str, Any]]:
    """Each job's recorded overrides; raises `JobsError` with every problem of every job.

    A problem all jobs share is listed once ("every job: ..."). `base` are the `--set` overrides under each job's.
    """
    found: dict[int, list[str]] = {}
    recorded = []
    for job in jobs:
        overrides = [*base, *job.overrides]
        prepared = prepare_workflow(workflow, overrides)
        problems = [str(problem) for problem in prepared.problems] or _prefix_problems(prepared)
        if problems:
            found[job.index] = problems
        else:
            recorded.append(recorded_overrides(prepared, overrides))
    if not found:
        return recorded
    shared = set.intersection(*map(set, found.values())) if len(found) == len(jobs) > 1 else set()
    lines = [f"every job: {problem}" for problem in found[jobs[0].index] if problem in shared] if shared else []
    lines += [f"{job}: {problem}" for job in jobs for problem in found.get(job.index, []) if problem not in shared]
    raise JobsError(lines)


def prepare_job(workflow: Any, base: list[Override], job: Job) -> PreparedWorkflow:
    """The job's workflow with job-specific file names; raises `InvalidWorkflow` if it no longer validates
    (say, a model folder went away since the check)."""
    prepared = prepare_workflow(workflow, [*base, *job.overrides])
    if prepared.problems:
        raise InvalidWorkflow(prepared.problems)
    for node_id in _output_nodes(prepared):
        prepared.prompt[node_id]["inputs"]["filename_prefix"] += JOB_SUFFIX.format(index=job.index)
    return prepared


def job_prefixes(prepared: PreparedWorkflow) -> list[str]:
    return [prepared.prompt[node_id]["inputs"]["filename_prefix"] for node_id in _output_nodes(prepared)]


# --------------------------------------------------------------------------- manifest


class Manifest:
    """`manifest.jsonl`: one JSON object a finished job, appended whole under a file lock."""

    def __init__(self, path: Path):
        self.path = path

    def records(self) -> list[dict]:
        """Every readable record (a line torn by a killed process is skipped)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def append(self, record: dict) -> None:
        """Add one line in a single write; a torn last line left by a killed process is ended first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record) + "\n").encode("utf-8")
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
        descriptor = os.open(self.path, flags, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            size = os.fstat(descriptor).st_size
            if size:
                os.lseek(descriptor, size - 1, os.SEEK_SET)  # to read the last byte; O_APPEND writes at the end
                if os.read(descriptor, 1) != b"\n":
                    line = b"\n" + line
            os.write(descriptor, line)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)  # releases the lock

    def finished(self, output_dir: Path) -> set[tuple[int, str]]:
        """(job, overrides as JSON) of every recorded success whose files are all there."""
        return {(record["job"], json.dumps(record.get("overrides"), sort_keys=True)) for record in self.records()
                if "files" in record and "error" not in record and isinstance(record.get("job"), int)
                and all((output_dir / name).exists() for name in record["files"])}


def pending_jobs(jobs: list[Job], recorded: list[dict], manifest: Manifest, output_dir: Path) -> list[int]:
    """Indices of the jobs not yet done with these overrides (failed jobs are tried again)."""
    finished = manifest.finished(output_dir)
    return [job.index for job, overrides in zip(jobs, recorded)
            if (job.index, json.dumps(overrides, sort_keys=True)) not in finished]


# --------------------------------------------------------------------------- running


def run_job(workflow: Any, base: list[Override], job: Job, overrides: dict, output_dir: Path,
            rank: int) -> tuple[dict, str]:
    """Render one job: its manifest record (`error` instead of `files` if it failed) and the failure's traceback."""
    started = time.perf_counter()
    record: dict[str, Any] = {"job": job.index, "overrides": overrides}
    failure = ""
    try:
        prepared = prepare_job(workflow, base, job)
        for prefix in job_prefixes(prepared):
            video_io.remove_interrupted_saves(output_dir, prefix)
        summary = execute(prepared)
    except Exception as exc:  # recorded; the batch goes on with the next job
        record["error"] = str(exc) or type(exc).__name__
        failure = "".join(traceback.format_exception(exc.__cause__ or exc))
    else:
        record["files"] = [Path(os.path.relpath(path, output_dir)).as_posix()
                           for output in summary["outputs"] for path in output["files"]]
    record["seconds"] = round(time.perf_counter() - started, 3)
    record["rank"] = rank
    return record, failure


class OverallProgress:
    """One bar of jobs done / total on the main process, fed by the manifest (so every process's jobs count)."""

    POLL_SECONDS = 1.0

    def __init__(self, manifest: Manifest, total: int, pending: list[int], enabled: bool):
        from tqdm.auto import tqdm

        self._path, self._pending, self._done = manifest.path, set(pending), set()
        self._offset = manifest.path.stat().st_size if manifest.path.exists() else 0
        self._bar = tqdm(total=total, initial=total - len(pending), desc="jobs", unit="job", file=sys.stderr,
                         dynamic_ncols=True, disable=not enabled or os.environ.get("T2V_NO_PROGRESS") == "1")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        if not self._bar.disable:
            self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.POLL_SECONDS):
            self.refresh()

    def refresh(self) -> None:
        """Count the jobs of this run that the manifest's new lines record."""
        with contextlib.suppress(FileNotFoundError), self._path.open("rb") as file:
            file.seek(self._offset)
            complete = file.read().rpartition(b"\n")[0]
            self._offset += len(complete) + 1 if complete else 0
            for line in complete.splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    self._done.add(json.loads(line).get("job"))
        self._bar.update(self._bar.initial + len(self._done & self._pending) - self._bar.n)

    def write(self, line: str) -> None:
        self._bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            self.refresh()
        self._bar.close()


@contextlib.contextmanager
def _quiet_batch() -> Iterator[None]:
    """Per-step bars off (the overall bar is the batch's), SIGTERM stops like a second Ctrl-C (so a stopped
    save removes its partial file), stdout kept for the summary."""
    previous_env = os.environ.get("T2V_NO_PROGRESS")
    os.environ["T2V_NO_PROGRESS"] = "1"

    def terminate(signum, frame):
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, terminate) if main_thread else None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous_handler)
        if previous_env is None:
            os.environ.pop("T2V_NO_PROGRESS", None)
        else:
            os.environ["T2V_NO_PROGRESS"] = previous_env


def _cpu_only() -> bool:
    """Processes run on the CPU under `accelerate launch --cpu` and wherever there is no GPU."""
    import torch

    return os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()


def load_batch(args: argparse.Namespace) -> tuple[Any, list[Job], list[dict]]:
    """The workflow, the jobs and each job's recorded overrides; raises `JobsError` listing every problem."""
    try:
        workflow = read_workflow_file(args.workflow)
        jobs = read_jobs(args.jobs)
        return workflow, jobs, check_jobs(workflow, args.overrides, jobs)
    except WorkflowError as exc:  # no workflow in the file, or not a workflow at all
        raise JobsError([str(exc)]) from exc


def batch_command(args: argparse.Namespace) -> int:
    """The `batch` command; every process of an `accelerate launch` runs it and returns the same status."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, gather_object

    state = PartialState(cpu=_cpu_only(), timeout=BARRIER_TIMEOUT)
    bridge.reset_folders()
    bridge.set_folders(models=args.models_dir, input=args.input_dir, output=args.output_dir)
    auto_device = args.device == "auto" and state.device.type in ("cpu", "cuda")
    bridge.set_device(str(state.device) if auto_device else args.device)

    problems, workflow, jobs, recorded = [], None, [], []
    try:
        workflow, jobs, recorded = load_batch(args)
    except JobsError as exc:
        problems = exc.problems
    every_process = gather_object([(state.process_index, problems)])
    if any(found for _, found in every_process):
        if state.is_main_process:
            _print_problems(every_process)
        return EXIT_INVALID

    output_dir = Path(bridge.output_directory()).resolve()
    manifest = Manifest(output_dir / MANIFEST_NAME)
    [pending] = broadcast_object_list([pending_jobs(jobs, recorded, manifest, output_dir)
                                       if state.is_main_process else None])
    by_index = {job.index: job for job in jobs}
    say = "" if state.is_main_process else f"process {state.process_index}: "
    progress = OverallProgress(manifest, len(jobs), pending, state.is_main_process)
    outcomes = []
    try:
        with _quiet_batch(), state.split_between_processes(pending) as share:
            for index in share:
                record, failure = run_job(workflow, args.overrides, by_index[index], recorded[index - 1], output_dir,
                                          state.process_index)
                manifest.append(record)
                outcomes.append((index, "error" not in record))
                if failure:
                    progress.write(f"{say}{by_index[index]} failed: {record['error']}")
                    if args.traceback:
                        progress.write(failure.rstrip())
        outcomes = gather_object(outcomes)  # waits for every process's share
    except KeyboardInterrupt as exc:
        print(f"{say}{exc or 'interrupted'}; run the same command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        progress.close()
    failed = sorted(index for index, ok in outcomes if not ok)
    if state.is_main_process:
        print(json.dumps({"jobs": len(jobs), "skipped": len(jobs) - len(pending),
                          "rendered": len(outcomes) - len(failed), "failed": failed, "manifest": str(manifest.path)},
                         indent=2))
        if failed:
            print(f"{len(failed)} job(s) failed: {', '.join(map(str, failed))}; their errors are in "
                  f"{manifest.path}; run the same command again to retry them", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _print_problems(every_process: list[tuple[int, list[str]]]) -> None:
    """The main process's problems, then another process's where they differ (say, a model missing on one machine)."""
    main_problems = dict(every_process).get(0, [])
    for rank, found in every_process:
        if rank == 0 or found != main_problems:
            for problem in found:
                print(problem if rank == 0 else f"process {rank}: {problem}", file=sys.stderr)
    print("the batch is invalid; nothing was run", file=sys.stderr)
