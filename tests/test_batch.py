"""Batch rendering: jobs files, validation of every job first, the manifest and resume, and real
`accelerate launch` runs on the CPU (two processes; two "machines" on one host)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from comfyui_text2video import bridge
from comfyui_text2video.headless.batch import JobsError, Manifest, read_jobs
from comfyui_text2video.headless.cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK, main
from comfyui_text2video.headless.runner import run_workflow
from comfyui_text2video.media import video_io

WORKFLOW = Path(__file__).resolve().parent.parent / "example_workflows" / "api" / "text2video.json"
SMALL = ["--set", "4.width=32", "--set", "4.height=32", "--set", "4.frames=2", "--set", "5.steps=2",
         "--set", "7.format=webp", "--set", "7.quality=100"]  # lossless, so frames compare exactly
PROMPTS = ["a red circle moving left", "a blue square moving up", "a green triangle moving down"]
SIX_JOBS = [{"2.text": prompt, "5.seed": seed} for seed in (1, 2) for prompt in PROMPTS]
LAUNCH_TIMEOUT = 600


@pytest.fixture(autouse=True)
def restore_bridge():
    """The batch command sets process-wide folders and device; later tests get the defaults back."""
    yield
    bridge.reset_folders()
    bridge.set_device("auto")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def batch_args(jobs: Path, output: Path, models: Path) -> list[str]:
    return [str(WORKFLOW), "--jobs", str(jobs), "--output-dir", str(output), "--models-dir", str(models), *SMALL]


def videos(output: Path) -> list[str]:
    """Every file and folder in the output folder but the manifest, hidden ones included."""
    return sorted(path.relative_to(output).as_posix() for path in output.rglob("*")
                  if path.name != "manifest.jsonl" and not (path.is_dir() and any(path.iterdir())))


def job_of(name: str) -> int:
    return int(name.split("_job")[1][:5])


def records(output: Path) -> list[dict]:
    return Manifest(output / "manifest.jsonl").records()


# --------------------------------------------------------------------------- jobs files


def test_csv_and_jsonl_jobs_read_as_overrides(tmp_path):
    csv_file = tmp_path / "jobs.csv"
    csv_file.write_text('2.text,5.seed,5.cfg\n"a fox, running",7,\n\nplain text,8,6.5\n')
    jobs = read_jobs(csv_file)
    assert [(job.index, job.line) for job in jobs] == [(1, 2), (2, 4)]
    assert [[(o.node_id, o.input_name, o.value) for o in job.overrides] for job in jobs] == [
        [("2", "text", "a fox, running"), ("5", "seed", 7)],  # an empty cell overrides nothing
        [("2", "text", "plain text"), ("5", "seed", 8), ("5", "cfg", 6.5)]]
    jsonl_file = write_jsonl(tmp_path / "jobs.jsonl", [{"2.text": "", "5.seed": 3}])
    jsonl_file.write_text(jsonl_file.read_text() + "\n" + json.dumps({"7.filename_prefix": "clips/a"}) + "\n")
    jobs = read_jobs(jsonl_file)
    assert [(job.index, job.line) for job in jobs] == [(1, 1), (2, 3)]
    assert [(o.node_id, o.input_name, o.value) for o in jobs[0].overrides] == [("2", "text", ""), ("5", "seed", 3)]


def test_unreadable_jobs_files_name_every_bad_line(tmp_path):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("2.text,seed,2.text\na,1,b\n")
    with pytest.raises(JobsError) as caught:
        read_jobs(bad_csv)
    assert caught.value.problems == [f"{bad_csv} header: column '2.text' appears 2 times",
                                     f"{bad_csv} header: 'seed' is not NODE_ID.INPUT"]
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"5.seed": 1}\n[1, 2]\n{"5.seed": \n{"seed": 2}\n')
    with pytest.raises(JobsError) as caught:
        read_jobs(bad_jsonl)
    assert [problem.removeprefix(f"{bad_jsonl} ") for problem in caught.value.problems] == [
        "line 2: expected an object of NODE_ID.INPUT keys, got list",
        "line 3: not JSON (Expecting value: line 1 column 12 (char 11))",
        "line 4: 'seed' is not NODE_ID.INPUT"]
    wide = tmp_path / "wide.csv"
    wide.write_text("5.seed\n1,2\n")
    with pytest.raises(JobsError, match="line 2: 2 cells, but the header names 1 columns"):
        read_jobs(wide)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(JobsError, match="has no jobs"):
        read_jobs(tmp_path / "empty.jsonl")
    with pytest.raises(JobsError, match="must end in .csv or .jsonl"):
        read_jobs(tmp_path / "jobs.txt")


# --------------------------------------------------------------------------- validation


def test_every_bad_job_is_refused_before_anything_runs(tmp_path, capsys, data_dir):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"5.seed": 1}, {"5.steps": 0, "9.text": "x"}, {"5.seed": 3},
                                                 {"5.sampler_name": "nope"}])
    output = tmp_path / "output"
    assert main(["batch", *batch_args(jobs, output, data_dir / "models")]) == EXIT_INVALID
    stderr = capsys.readouterr().err.splitlines()
    assert "job 2 (line 2): node 5 (T2VSampler) input 'steps': value 0 is smaller than min 1" in stderr
    assert "job 2 (line 2): node 9 input 'text': --set: no node has this id" in stderr
    assert any(line.startswith("job 4 (line 4): node 5 (T2VSampler) input 'sampler_name': value 'nope' is not one of")
               for line in stderr)
    assert not any(line.startswith(("job 1 ", "job 3 ")) for line in stderr)
    assert stderr[-1] == "the batch is invalid; nothing was run"
    assert not output.exists()


def test_a_problem_of_every_job_is_listed_once(tmp_path, capsys, data_dir):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [{"5.seed": 1}, {"5.seed": 2}])
    args = batch_args(jobs, tmp_path / "output", data_dir / "models") + ["--set", "5.cfg=-1"]
    assert main(["batch", *args]) == EXIT_INVALID
    stderr = capsys.readouterr().err.splitlines()
    [problem] = stderr[:-1]
    assert problem.startswith("every job: node 5 (T2VSampler)") and "'cfg'" in problem and "-1" in problem


# --------------------------------------------------------------------------- in one process


def test_one_process_renders_each_job_once_and_a_rerun_only_what_is_missing(tmp_path, capsys, data_dir, tiny_t2v):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", SIX_JOBS[:3])
    output = tmp_path / "output"
    args = ["batch", *batch_args(jobs, output, data_dir / "models")]
    assert main(args) == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"jobs": 3, "skipped": 0, "rendered": 3, "failed": [],
                       "manifest": str((output / "manifest.jsonl").resolve())}
    first = records(output)
    assert [(r["job"], r["files"], r["rank"]) for r in first] == [
        (index, [f"Text2Video/text2video_job0000{index}_00001.webp"], 0) for index in (1, 2, 3)]
    assert first[0]["overrides"] == {"4.width": 32, "4.height": 32, "4.frames": 2, "5.steps": 2, "7.format": "webp",
                                     "7.quality": 100, "2.text": PROMPTS[0], "5.seed": 1}
    assert all(r["seconds"] > 0 and "error" not in r for r in first)

    assert main(args) == EXIT_OK  # nothing to do
    assert json.loads(capsys.readouterr().out)["skipped"] == 3
    assert len(records(output)) == 3

    (output / first[1]["files"][0]).unlink()  # a lost file is rendered again ...
    write_jsonl(jobs, [SIX_JOBS[0], SIX_JOBS[1], {**SIX_JOBS[2], "5.seed": 9}])  # ... and so is a changed job
    assert main(args) == EXIT_OK
    assert json.loads(capsys.readouterr().out) | {"manifest": None} == {
        "jobs": 3, "skipped": 1, "rendered": 2, "failed": [], "manifest": None}
    assert [(r["job"], r["files"]) for r in records(output)[3:]] == [
        (2, ["Text2Video/text2video_job00002_00001.webp"]), (3, ["Text2Video/text2video_job00003_00002.webp"])]


def test_a_failed_job_is_recorded_and_the_batch_goes_on(tmp_path, capsys, data_dir, tiny_t2v):
    ddim_karras = {"5.sampler_name": "ddim", "5.scheduler": "karras"}  # valid inputs that ddim cannot run
    jobs = write_jsonl(tmp_path / "jobs.jsonl", [SIX_JOBS[0], ddim_karras, SIX_JOBS[1]])
    output = tmp_path / "output"
    args = ["batch", *batch_args(jobs, output, data_dir / "models")]
    assert main(args) == EXIT_FAILED
    captured = capsys.readouterr()
    assert json.loads(captured.out)["failed"] == [2]
    assert "job 2 (line 2) failed: node 5 (T2VSampler) failed:" in captured.err
    assert "1 job(s) failed: 2;" in captured.err
    [failure] = [r for r in records(output) if "error" in r]
    assert failure["job"] == 2 and "files" not in failure and "Karras" in failure["error"]
    assert [job_of(name) for name in videos(output)] == [1, 3]
    assert main(args) == EXIT_FAILED  # a rerun tries the failed job again, and only it
    assert json.loads(capsys.readouterr().out) | {"manifest": None} == {
        "jobs": 3, "skipped": 2, "rendered": 0, "failed": [2], "manifest": None}


def test_manifest_lines_stay_whole_after_a_torn_one(tmp_path):
    manifest = Manifest(tmp_path / "manifest.jsonl")
    manifest.append({"job": 1, "files": []})
    with manifest.path.open("a") as file:
        file.write('{"job": 2, "fi')  # a process killed mid-line
    manifest.append({"job": 3, "files": []})
    assert manifest.records() == [{"job": 1, "files": []}, {"job": 3, "files": []}]


def test_leftovers_of_a_killed_save_are_removed_and_finished_files_kept(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a_job00001_00001.mp4", "b_job00001_00001.mp4", "a_job00001_00003"):
        (folder / name).mkdir() if "." not in name else (folder / name).touch()  # empty placeholders
    (folder / ".a_job00001_00002.mp4.0123abcd.partial").write_bytes(b"half")
    (folder / "a_job00001_00004.mp4").write_bytes(b"done")
    (folder / "a_job00001_00005").mkdir()
    (folder / "a_job00001_00005" / "00000.png").write_bytes(b"done")
    removed = video_io.remove_interrupted_saves(tmp_path, "clips/a_job00001")
    assert sorted(path.name for path in removed) == [".a_job00001_00002.mp4.0123abcd.partial", "a_job00001_00001.mp4",
                                                     "a_job00001_00003"]
    assert sorted(path.name for path in folder.iterdir()) == ["a_job00001_00004.mp4", "a_job00001_00005",
                                                              "b_job00001_00001.mp4"]


# --------------------------------------------------------------------------- processes


def environment(data_dir: Path) -> dict:
    """CPU only, one thread a process (torchrun's default when it starts several), no bars."""
    return {**os.environ, "T2V_DATA_DIR": str(data_dir), "T2V_NO_PROGRESS": "1", "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": "1"}


def launch(args: list[str], data_dir: Path, **launch_flags) -> subprocess.Popen:
    flags = [f"--{name}={value}" for name, value in {"num_machines": 1, "mixed_precision": "no",
                                                       "dynamo_backend": "no", **launch_flags}.items()]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", *flags,
               "-m", "comfyui_text2video", "batch", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment(data_dir))


def finish(process: subprocess.Popen) -> tuple[str, str]:
    try:
        stdout, stderr = process.communicate(timeout=LAUNCH_TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == EXIT_OK, stderr
    return stdout, stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_batch(tmp_path_factory, data_dir, tiny_t2v):
    """6 jobs under `accelerate launch --num_processes 2` on the CPU: (output folder, jobs file, main's stdout)."""
    root = tmp_path_factory.mktemp("two-processes")
    jobs = write_jsonl(root / "jobs.jsonl", SIX_JOBS)
    output = root / "output"
    stdout, _ = finish(launch(batch_args(jobs, output, data_dir / "models"), data_dir, num_processes=2,
                              main_process_port=free_port()))
    return output, jobs, stdout


def test_two_processes_render_each_job_once_and_share_the_jobs(two_process_batch):
    output, _, stdout = two_process_batch
    assert json.loads(stdout)["rendered"] == 6  # printed once, by the main process
    names = videos(output)
    assert sorted(map(job_of, names)) == [1, 2, 3, 4, 5, 6] and all(name.endswith("_00001.webp") for name in names)
    ranks = {r["job"]: r["rank"] for r in records(output)}
    assert len(records(output)) == 6 and ranks == {1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 1}


def test_a_rerun_after_the_two_processes_writes_nothing(two_process_batch, capsys, data_dir):
    output, jobs, _ = two_process_batch
    before = {path: path.stat().st_mtime_ns for path in output.rglob("*")}
    assert main(["batch", *batch_args(jobs, output, data_dir / "models")]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["skipped"] == 6
    assert {path: path.stat().st_mtime_ns for path in output.rglob("*")} == before


def test_job_frames_equal_single_runs_with_the_same_overrides(two_process_batch, data_dir, tmp_path):
    output, _, _ = two_process_batch
    bridge.set_folders(output=tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the batch's processes: the same sums in the same order
    try:
        for job in (1, 6):  # one of each process
            overrides = SMALL[1::2] + [f"{key}={value}" for key, value in SIX_JOBS[job - 1].items()]
            [single] = run_workflow(json.loads(WORKFLOW.read_text()), overrides)["outputs"][0]["files"]
            batch = output / f"Text2Video/text2video_job0000{job}_00001.webp"
            assert torch.equal(video_io.read_frames(single).frames, video_io.read_frames(batch).frames)
    finally:
        torch.set_num_threads(threads)
    first, last = (video_io.read_frames(output / f"Text2Video/text2video_job0000{job}_00001.webp").frames
                   for job in (1, 6))
    assert not torch.equal(first, last)


def test_a_killed_batch_resumes_where_it_stopped(tmp_path, capsys, data_dir, tiny_t2v):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", SIX_JOBS)
    output = tmp_path / "output"
    args = batch_args(jobs, output, data_dir / "models")
    process = subprocess.Popen([sys.executable, "-m", "comfyui_text2video", "batch", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment(data_dir))
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while len(records(output)) < 2:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)  # no chance to clean up
        process.communicate(timeout=60)
    finally:
        process.kill()
    done = {r["job"] for r in records(output)}
    assert 2 <= len(done) < 6
    assert main(["batch", *args]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["skipped"] == len(done)
    names = videos(output)
    assert sorted(map(job_of, names)) == [1, 2, 3, 4, 5, 6]  # no leftover of the killed save either
    assert sorted(r["job"] for r in records(output)) == [1, 2, 3, 4, 5, 6]


@pytest.mark.skipif(os.environ.get("T2V_TEST_MULTINODE") != "1",
                    reason="two accelerate launches: `make test-batch` runs it (T2V_TEST_MULTINODE=1)")
def test_two_machines_split_the_jobs(tmp_path, data_dir, tiny_t2v):
    jobs = write_jsonl(tmp_path / "jobs.jsonl", SIX_JOBS)
    output = tmp_path / "output"
    port = free_port()
    machines = [launch(batch_args(jobs, output, data_dir / "models"), data_dir, num_machines=2, num_processes=2,
                       machine_rank=rank, main_process_ip="127.0.0.1", main_process_port=port) for rank in (0, 1)]
    outputs = [finish(machine) for machine in machines]
    assert json.loads(outputs[0][0])["rendered"] == 6 and outputs[1][0] == ""
    assert {r["job"]: r["rank"] for r in records(output)} == {1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 1}
    assert sorted(map(job_of, videos(output))) == [1, 2, 3, 4, 5, 6]
