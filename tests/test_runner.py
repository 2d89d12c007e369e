"""Executing workflows: what runs, how often, with what; the CLI's output and exit codes."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

import fake_workflow_nodes as fake
from comfyui_text2video import bridge, nodes
from comfyui_text2video.headless.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, main, object_info
from comfyui_text2video.headless.runner import NodeExecutionError, RunInterrupted, run_workflow
from comfyui_text2video.headless.workflow import InvalidWorkflow
from fake_workflow_nodes import calls_of, standard_api, standard_ui
from terminal import ctrl_c_reaches_the_child

TESTS_DIR = Path(__file__).parent


@pytest.fixture(autouse=True)
def restore_bridge():
    """The CLI sets process-wide folders and device; later tests get the defaults back."""
    yield
    bridge.reset_folders()
    bridge.set_device("auto")


@pytest.fixture
def fake_pack(monkeypatch, tmp_path):
    """The fake nodes stand in for the pack's; outputs go to tmp_path/output."""
    monkeypatch.setattr(nodes, "NODE_CLASS_MAPPINGS", dict(fake.NODE_CLASS_MAPPINGS))
    monkeypatch.setattr(nodes, "NODE_DISPLAY_NAME_MAPPINGS", fake.NODE_DISPLAY_NAME_MAPPINGS)
    fake.CALLS.clear()
    bridge.set_folders(output=tmp_path / "output")
    return nodes.NODE_CLASS_MAPPINGS


def write_workflow(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(data))
    return str(path)


def output_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "output").rglob("*") if p.is_file())


# --------------------------------------------------------------------------- execution


def test_runs_each_needed_node_once_in_dependency_order(fake_pack, tmp_path):
    api = standard_api()
    api["6"] = {"class_type": "FakeEncode", "inputs": {"clip": ["1", 1], "text": "unused"}}  # feeds nothing
    api["7"] = {"class_type": "FakeSave", "inputs": {"samples": ["4", 0], "filename_prefix": "second"}}
    summary = run_workflow(api)
    assert [(name, node_id) for name, node_id, _ in fake.CALLS] == [
        ("FakeLoader", "1"), ("FakeEncode", "2"), ("FakeEmptyLatent", "3"), ("FakeSampler", "4"),
        ("FakeSave", "5"), ("FakeSave", "7")]
    [(_, sampler_inputs)] = calls_of("FakeSampler")
    assert sampler_inputs == {"model": {"model": "big", "dtype": "float32"}, "positive": "cond:a red fox",
                              "latent": {"width": 128, "frames": 16}, "seed": 42, "steps": 30, "cfg": 6.5,
                              "sampler_name": "euler", "eta": 0.25}
    output_dir = (tmp_path / "output").resolve()
    assert summary == {"outputs": [
        {"node": "5", "files": [str(output_dir / "fake" / "clip_00000.json")]},
        {"node": "7", "files": [str(output_dir / "fake" / "second_00001.json")]}]}
    assert all(Path(path).is_file() for output in summary["outputs"] for path in output["files"])


def test_hidden_inputs_carry_prompt_workflow_and_node_id(fake_pack):
    ui = standard_ui().build()
    run_workflow(ui, ["4.steps=11"])
    [(node_id, save_inputs)] = calls_of("FakeSave")
    assert node_id == "5"
    assert save_inputs["prompt"]["4"]["inputs"]["steps"] == 11
    assert save_inputs["prompt"]["4"]["class_type"] == "FakeSampler"
    embedded = save_inputs["extra_pnginfo"]["workflow"]
    assert embedded["links"] == ui["links"]
    assert next(n for n in embedded["nodes"] if n["id"] == 4)["widgets_values"][2] == 11
    fake.CALLS.clear()
    run_workflow(standard_api())
    assert calls_of("FakeSave")[0][1]["extra_pnginfo"] == {"workflow": None}


def test_invalid_workflow_runs_nothing(fake_pack, tmp_path):
    api = standard_api()
    api["4"]["inputs"]["steps"] = 0
    with pytest.raises(InvalidWorkflow) as caught:
        run_workflow(api)
    assert [str(p) for p in caught.value.problems] == [
        "node 4 (FakeSampler) input 'steps': value 0 is smaller than min 1"]
    assert fake.CALLS == [] and output_files(tmp_path) == []


def test_a_failing_node_is_named(fake_pack):
    api = standard_api()
    api["6"] = {"class_type": "FakeFail", "inputs": {"latent": ["3", 0]}}
    api["5"]["inputs"]["samples"] = ["6", 0]
    with pytest.raises(NodeExecutionError, match=r"^node 6 \(FakeFail\) failed: the fake node always fails$"):
        run_workflow(api)
    assert [name for name, _, _ in fake.CALLS] == ["FakeEmptyLatent", "FakeFail"]


def test_a_node_returning_the_wrong_number_of_outputs_is_named(fake_pack, monkeypatch):
    monkeypatch.setattr(fake.FakeEncode, "compute", lambda self, clip, text: ("a", "b"))
    with pytest.raises(NodeExecutionError, match=r"node 2 \(FakeEncode\) failed: returned 2 value\(s\), "
                                                 r"but RETURN_TYPES declares 1"):
        run_workflow(standard_api())


def test_runs_twice_in_one_process(fake_pack):
    first = run_workflow(standard_api())
    second = run_workflow(standard_api())
    assert len(fake.CALLS) == 10
    assert first["outputs"][0]["files"] != second["outputs"][0]["files"]  # the fake numbers its files


class Blob:
    """A stand-in for a big tensor; `made` holds weak references to every blob made."""

    made: list = []

    def __init__(self):
        Blob.made.append(weakref.ref(self))


class MakeBlob:
    """Makes a blob; records how many blobs were still held anywhere when it ran."""

    RETURN_TYPES = ("BLOB",)
    FUNCTION = "run"
    alive_when_run: dict = {}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": ("STRING",)}, "optional": {"blob": ("BLOB",), "also": ("BLOB",)}}

    def run(self, name, blob=None, also=None):
        del blob, also
        gc.collect()
        MakeBlob.alive_when_run[name] = sum(ref() is not None for ref in Blob.made)
        return (Blob(),)


class SaveBlob(MakeBlob):
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    def run(self, name, blob=None, also=None):
        super().run(name, blob, also)
        return ()


def test_outputs_are_dropped_after_their_last_consumer(fake_pack, monkeypatch):
    monkeypatch.setattr(Blob, "made", [])
    monkeypatch.setattr(MakeBlob, "alive_when_run", {})
    fake_pack.update(MakeBlob=MakeBlob, SaveBlob=SaveBlob)
    run_workflow({"1": {"class_type": "MakeBlob", "inputs": {"name": "a"}},
                  "2": {"class_type": "MakeBlob", "inputs": {"name": "b", "blob": ["1", 0]}},
                  "3": {"class_type": "MakeBlob", "inputs": {"name": "c", "blob": ["2", 0], "also": ["1", 0]}},
                  "4": {"class_type": "SaveBlob", "inputs": {"name": "d", "blob": ["3", 0]}}})
    # node 3 still needs node 1's blob while node 2 runs; when node 4 runs only node 3's blob is left
    assert MakeBlob.alive_when_run == {"a": 0, "b": 1, "c": 2, "d": 1}


class ListTaker:
    """Takes any value, so a list can only arrive wrapped as {"__value__": [...]} (lists are links)."""

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"
    received = None

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"points": ("*",)}}

    def run(self, points):
        type(self).received = points
        return {"ui": {}}


def test_list_values_arrive_unwrapped_and_are_not_taken_for_links(fake_pack, monkeypatch):
    fake_pack["ListTaker"] = ListTaker
    monkeypatch.setattr(ListTaker, "received", None)
    assert run_workflow({"1": {"class_type": "ListTaker", "inputs": {"points": {"__value__": [3, 4]}}}}) == {
        "outputs": [{"node": "1", "files": []}]}
    assert ListTaker.received == [3, 4]


class InterruptingNode:
    """Presses Ctrl-C `presses` times while it runs, then (if `checks`) checks for interrupts like a sampler."""

    presses = 1
    checks = True
    reached_check = False
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT",)}}

    def run(self, latent):
        for _ in range(self.presses):
            signal.raise_signal(signal.SIGINT)
        type(self).reached_check = True
        if self.checks:
            bridge.check_interrupt()
        return (latent,)


@pytest.mark.parametrize("presses, checks, stopped_at", [
    (1, True, "node 6 (InterruptingNode)"),  # stops at the node's next check
    (2, True, "node 6 (InterruptingNode)"),  # a second press stops at once
    (1, False, "node 5 (FakeSave)"),  # a node that never checks: the run stops before the next node
])
def test_ctrl_c_interrupts_the_run_and_restores_the_handler(fake_pack, monkeypatch, tmp_path, presses, checks,
                                                            stopped_at):
    monkeypatch.setattr(InterruptingNode, "presses", presses)
    monkeypatch.setattr(InterruptingNode, "checks", checks)
    monkeypatch.setattr(InterruptingNode, "reached_check", False)
    fake_pack["InterruptingNode"] = InterruptingNode
    api = standard_api()
    api["6"] = {"class_type": "InterruptingNode", "inputs": {"latent": ["3", 0]}}
    api["5"]["inputs"]["samples"] = ["6", 0]
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RunInterrupted) as caught:
        run_workflow(api)
    assert str(caught.value) == f"interrupted at {stopped_at}"
    assert InterruptingNode.reached_check is (presses == 1)  # one press lets the node go on, two do not
    assert signal.getsignal(signal.SIGINT) is handler_before
    assert calls_of("FakeSave") == [] and output_files(tmp_path) == []
    run_workflow(standard_api())  # no interrupt request is left over
    assert len(calls_of("FakeSave")) == 1


# --------------------------------------------------------------------------- CLI


def test_cli_run_prints_only_the_summary_on_stdout(fake_pack, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fake.FakeLoader, "compute", lambda self, model_name, dtype: (
        print("chatty node output") or ({"model": model_name}, {"clip": model_name})))
    path = write_workflow(tmp_path, standard_ui().build())
    status = main(["run", path, "--output-dir", str(tmp_path / "elsewhere"), "--set", "4.steps=3",
                   "--device", "cpu"])
    captured = capsys.readouterr()
    assert status == EXIT_OK
    summary = json.loads(captured.out)
    [file] = summary["outputs"][0]["files"]
    assert Path(file).parent == (tmp_path / "elsewhere" / "fake").resolve() and Path(file).is_file()
    assert calls_of("FakeSampler")[0][1]["steps"] == 3
    assert "chatty node output" in captured.err and "[5/5] node 5 (FakeSave)" in captured.err


def test_cli_invalid_workflow_exits_2_with_one_line_per_problem(fake_pack, tmp_path, capsys):
    api = standard_api()
    api["3"]["inputs"]["width"] = 1000
    api["4"]["inputs"]["sampler_name"] = "dpm"
    status = main(["run", write_workflow(tmp_path, api), "--output-dir", str(tmp_path / "output"),
                   "--set", "9.seed=1"])
    captured = capsys.readouterr()
    assert status == EXIT_INVALID and captured.out == ""
    assert captured.err.splitlines() == [
        "node 3 (FakeEmptyLatent) input 'width': value 1000 is bigger than max 512",
        "node 4 (FakeSampler) input 'sampler_name': value 'dpm' is not one of: 'ddim', 'euler'",
        "node 9 input 'seed': --set: no node has this id",
        "the workflow is invalid (3 problem(s)); nothing was run",
    ]
    assert fake.CALLS == [] and output_files(tmp_path) == []


@pytest.mark.parametrize("argv_tail, message", [
    (["--set", "steps=3"], "expected NODE_ID.INPUT=VALUE"),
    (["--device", "tpu"], "is not auto, cpu, cuda or cuda:N"),
])
def test_cli_bad_arguments_exit_2(fake_pack, tmp_path, capsys, argv_tail, message):
    with pytest.raises(SystemExit) as exited:
        main(["run", write_workflow(tmp_path, standard_api()), *argv_tail])
    assert exited.value.code == EXIT_INVALID and message in capsys.readouterr().err


def test_cli_unreadable_or_foreign_file_exits_2(fake_pack, tmp_path, capsys):
    (tmp_path / "broken.json").write_text("{not json")
    assert main(["run", str(tmp_path / "broken.json")]) == EXIT_INVALID
    assert "cannot read workflow" in capsys.readouterr().err
    assert main(["run", write_workflow(tmp_path, {"prompt": {}, "client_id": "x"})]) == EXIT_INVALID
    assert "not a ComfyUI workflow" in capsys.readouterr().err


def test_cli_node_failure_exits_1(fake_pack, tmp_path, capsys):
    api = standard_api()
    api["6"] = {"class_type": "FakeFail", "inputs": {"latent": ["3", 0]}}
    api["5"]["inputs"]["samples"] = ["6", 0]
    status = main(["run", write_workflow(tmp_path, api), "--traceback"])
    captured = capsys.readouterr()
    assert status == EXIT_FAILED and captured.out == ""
    assert captured.err.splitlines()[-1] == "node 6 (FakeFail) failed: the fake node always fails"
    assert "Traceback" in captured.err


def test_cli_interrupt_exits_130(fake_pack, tmp_path, capsys):
    fake_pack["InterruptingNode"] = InterruptingNode
    api = standard_api()
    api["6"] = {"class_type": "InterruptingNode", "inputs": {"latent": ["3", 0]}}
    api["5"]["inputs"]["samples"] = ["6", 0]
    assert main(["run", write_workflow(tmp_path, api)]) == EXIT_INTERRUPTED
    assert "interrupted at node 6 (InterruptingNode)" in capsys.readouterr().err


def test_nodes_json_has_the_object_info_shape(fake_pack, capsys):
    assert main(["nodes", "--json"]) == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    assert list(info) == list(fake.NODE_CLASS_MAPPINGS)
    sampler = info["FakeSampler"]
    assert set(sampler) == {"input", "input_order", "output", "output_is_list", "output_name", "name",
                            "display_name", "description", "python_module", "category", "output_node"}
    assert sampler["input_order"] == {"required": ["model", "positive", "latent", "seed", "steps", "cfg",
                                                   "sampler_name"], "optional": ["eta"], "hidden": ["unique_id"]}
    assert sampler["input"]["required"]["steps"] == ["INT", {"default": 20, "min": 1, "max": 100}]
    assert (sampler["display_name"], sampler["output_name"], sampler["output_is_list"]) == (
        "Fake Sampler", ["LATENT"], [False])
    assert info["FakeLoader"]["output_name"] == ["model", "clip"]
    assert (info["FakeSave"]["output_node"], sampler["output_node"]) == (True, False)
    assert info["FakeLoader"]["display_name"] == "FakeLoader"


def test_nodes_listing_is_readable(fake_pack, capsys):
    assert main(["nodes"]) == EXIT_OK
    listing = capsys.readouterr().out
    assert 'FakeSampler  "Fake Sampler"  [tests]' in listing
    assert "    steps: INT  (default 20, min 1, max 100)" in listing
    assert "    sampler_name: one of ddim, euler" in listing
    assert "    eta: FLOAT  (optional, default 0.0, min 0.0, max 1.0)" in listing
    assert "    -> model T2V_MODEL, clip T2V_CLIP" in listing


# --------------------------------------------------------------------------- subprocesses

FAKE_PACK_CLI = f"""
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
import fake_workflow_nodes
from comfyui_text2video.headless import workflow
from comfyui_text2video.headless.cli import main
workflow.pack_node_classes = lambda: fake_workflow_nodes.NODE_CLASS_MAPPINGS
sys.exit(main(sys.argv[1:]))
"""


def cli_environment(tmp_path: Path) -> dict:
    return {**os.environ, "T2V_DATA_DIR": str(tmp_path / "data"), "T2V_NO_PROGRESS": "1"}


def test_subprocess_ctrl_c_stops_between_steps_with_130(tmp_path):
    api = {"3": {"class_type": "FakeEmptyLatent", "inputs": {"width": 64, "frames": 8}},
           "9": {"class_type": "FakeSlowSave", "inputs": {"samples": ["3", 0], "seconds": 60}}}
    output = tmp_path / "output"
    process = subprocess.Popen(
        [sys.executable, "-c", FAKE_PACK_CLI, "run", write_workflow(tmp_path, api), "--output-dir", str(output)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_environment(tmp_path),
        preexec_fn=ctrl_c_reaches_the_child)
    try:
        deadline = time.monotonic() + 60
        while not (output / "started").exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert "interrupted at node 9 (FakeSlowSave)" in stderr and stdout == ""
    assert not (output / "slow.json").exists()
    assert not (output / "torn").exists()  # it stopped at a check between steps


def test_real_pack_nodes_json_matches_the_in_process_object_info(tmp_path, monkeypatch):
    environment = cli_environment(tmp_path)
    result = subprocess.run([sys.executable, "-m", "comfyui_text2video", "nodes", "--json"], capture_output=True,
                            text=True, env=environment, timeout=300)
    assert result.returncode == EXIT_OK, result.stderr
    monkeypatch.setenv("T2V_DATA_DIR", environment["T2V_DATA_DIR"])  # the same folders list the same files
    assert json.loads(result.stdout) == json.loads(json.dumps(object_info()))
    assert "T2VSampler" in json.loads(result.stdout)


def test_real_pack_invalid_workflow_exits_2(tmp_path):
    if "T2VSaveVideo" not in nodes.NODE_CLASS_MAPPINGS:
        pytest.skip("T2VSaveVideo is not written yet")
    api = {
        "1": {"class_type": "T2VModelLoader", "inputs": {"model_name": "builtin:tiny-text2video", "dtype": "auto"}},
        "2": {"class_type": "T2VTextEncode", "inputs": {"clip": ["1", 1], "text": "a fox"}},
        "3": {"class_type": "T2VEmptyLatentVideo", "inputs": {"width": 64, "height": 64, "frames": 4,
                                                               "batch_size": 1}},
        "5": {"class_type": "T2VSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent": ["3", 0], "seed": 0,
            "steps": 0, "cfg": 7.0, "sampler_name": "ddim", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "T2VVAEDecode", "inputs": {"vae": ["1", 2], "latent": ["5", 0]}},
        "7": {"class_type": "T2VSaveVideo", "inputs": {"images": ["6", 0], "fps": 8.0, "filename_prefix": "t",
                                                       "format": "gif"}},
    }
    result = subprocess.run([sys.executable, "-m", "comfyui_text2video", "run", write_workflow(tmp_path, api)],
                            capture_output=True, text=True, env=cli_environment(tmp_path), timeout=300)
    assert result.returncode == EXIT_INVALID
    assert "node 5 (T2VSampler) input 'steps': value 0 is smaller than min 1" in result.stderr.splitlines()
    assert not (tmp_path / "data" / "output").exists()


def test_real_pack_runs_an_editor_workflow(tmp_path, capsys, data_dir):
    ui = fake.UiWorkflow()
    ui.node(1, "T2VModelLoader", ["builtin:tiny-text2video", "float32"], outputs=["T2V_MODEL", "T2V_CLIP", "T2V_VAE"])
    ui.node(2, "T2VTextEncode", ["a red fox"], inputs=[("clip", "T2V_CLIP")], outputs=["CONDITIONING"])
    ui.node(3, "T2VTextEncode", [""], inputs=[("clip", "T2V_CLIP")], outputs=["CONDITIONING"])
    ui.node(4, "T2VEmptyLatentVideo", [64, 64, 4, 1], outputs=["LATENT"])
    ui.node(5, "T2VSampler", [5, "randomize", 2, 7.0, "ddim", "normal", 1.0, 0.0, 0, 10000, True, False],
            inputs=[("model", "T2V_MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                    ("latent", "LATENT")], outputs=["LATENT"])
    ui.node(6, "T2VVAEDecode", [8], inputs=[("vae", "T2V_VAE"), ("latent", "LATENT")], outputs=["IMAGE"])
    ui.node(7, "T2VSaveVideo", [8.0, "runner/fox", "gif", 85], inputs=[("images", "IMAGE")])
    for origin, slot, target, name in [(1, 1, 2, "clip"), (1, 1, 3, "clip"), (1, 0, 5, "model"), (2, 0, 5, "positive"),
                                       (3, 0, 5, "negative"), (4, 0, 5, "latent"), (1, 2, 6, "vae"),
                                       (5, 0, 6, "latent"), (6, 0, 7, "images")]:
        ui.link(origin, slot, target, name)
    output = tmp_path / "output"
    status = main(["run", write_workflow(tmp_path, ui.build()), "--output-dir", str(output), "--device", "cpu"])
    captured = capsys.readouterr()
    assert status == EXIT_OK, captured.err
    [entry] = json.loads(captured.out)["outputs"]
    [file] = entry["files"]
    assert entry["node"] == "7" and file.endswith(".gif") and Path(file).is_file()
    assert Path(file).parent == (output / "runner").resolve()
