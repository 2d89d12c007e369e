"""Bad input gets a clean error: one regression test per defect that fuzzing the runner found (issue 15)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from reference_pipelines import text2video_pipeline
from terminal import ctrl_c_reaches_the_child

from comfyui_text2video import bridge, nodes
from comfyui_text2video.errors import NodeInputError
from comfyui_text2video.headless.cli import EXIT_INTERRUPTED, EXIT_INVALID, main
from comfyui_text2video.headless.runner import RunInterrupted, run_workflow
from comfyui_text2video.headless.workflow import validate_workflow
from comfyui_text2video.media import video_io
from comfyui_text2video.models import loading
from comfyui_text2video.nodes.conditioning import T2VTextEncode
from comfyui_text2video.nodes.video import T2VSaveVideo

EXAMPLES = Path(__file__).resolve().parent.parent / "example_workflows"


@pytest.fixture(autouse=True)
def restore_bridge():
    yield
    bridge.reset_folders()
    bridge.set_device("auto")


def example(name: str, api: bool = True) -> dict:
    return json.loads((EXAMPLES / ("api" if api else "") / f"{name}.json").read_text())


def run_cli(tmp_path: Path, workflow, *extra: str) -> tuple[int, str]:
    """Run the CLI in-process on `workflow` (a dict, or the file's text); returns (status, stderr)."""
    path = tmp_path / "workflow.json"
    path.write_text(workflow if isinstance(workflow, str) else json.dumps(workflow))
    import contextlib
    import io

    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        status = main(["run", str(path), "--output-dir", str(tmp_path / "output"), *extra])
    return status, errors.getvalue()


def assert_refused(status: int, stderr: str, *expected: str) -> None:
    assert status == EXIT_INVALID, stderr
    assert "Traceback" not in stderr
    for text in expected:
        assert text in stderr, stderr


# --------------------------------------------------------------------------- 1-3: workflow structure


def test_1_api_node_whose_inputs_is_a_list_is_invalid(tmp_path):
    status, stderr = run_cli(tmp_path, {"1": {"class_type": "T2VSaveVideo", "inputs": [1, 2]}})
    assert_refused(status, stderr, "node 1 (T2VSaveVideo): 'inputs' is a list; it must be an object")
    assert "required input is missing" not in stderr  # the node is not checked further
    assert not (tmp_path / "output").exists()


@pytest.mark.parametrize("field, value, message", [
    ("inputs", "abc", "node 2 (T2VTextEncode): 'inputs' is a string; it must be a list of slot objects"),
    ("inputs", 7, "node 2 (T2VTextEncode): 'inputs' is a number; it must be a list of slot objects"),
    ("outputs", 7, "node 2 (T2VTextEncode): 'outputs' is a number"),
    ("widgets_values", "a fox", "node 2 (T2VTextEncode): 'widgets_values' is a string"),
])
def test_2_ui_node_with_misshapen_fields_is_invalid(tmp_path, field, value, message):
    ui = example("text2video", api=False)
    next(node for node in ui["nodes"] if node["id"] == 2)[field] = value
    status, stderr = run_cli(tmp_path, ui)
    assert_refused(status, stderr, message, "re-save the workflow from the editor")


def test_2_ui_links_and_slots_of_the_wrong_shape_are_invalid(tmp_path):
    ui = example("text2video", api=False)
    ui["links"].append(["x", None])
    next(node for node in ui["nodes"] if node["id"] == 2)["inputs"][0]["link"] = [1]
    status, stderr = run_cli(tmp_path, ui)
    assert_refused(status, stderr, "node 2 (T2VTextEncode) input 'clip': the slot's 'link' is a list",
                   'the link ["x", null] is not [id, origin_id')


def nested_extra(depth: int) -> dict:
    ui = example("text2video", api=False)
    inner: dict = {}
    for _ in range(depth):
        inner = {"a": inner}
    ui["extra"] = inner
    return ui


@pytest.mark.parametrize("text, message", [
    ("[" * 10000 + "]" * 10000, "its JSON nests too deeply to be a workflow"),
    (json.dumps(nested_extra(500)), "its JSON nests more than 100 levels deep"),
])
def test_3_deeply_nested_json_is_refused_without_recursion_error(tmp_path, text, message):
    status, stderr = run_cli(tmp_path, text)
    assert_refused(status, stderr, message)


# --------------------------------------------------------------------------- 4, 8: output names and folders


@pytest.mark.parametrize("prefix, message", [
    ("p" * 245, "the file name 'ppppp"),
    ("p" * 300, "at most 226 fit"),
    ("x/" + "d" * 300 + "/video", "the folder name 'ddd"),
    ("bad\x00name", "contains control characters"),
    ("two\nlines", "contains control characters"),
])
def test_4_filename_prefix_that_cannot_be_saved_is_refused_at_validation(tmp_path, prefix, message):
    status, stderr = run_cli(tmp_path, example("text2video"), "--set", f"7.filename_prefix={json.dumps(prefix)}")
    assert_refused(status, stderr, "node 7 (T2VSaveVideo) input 'filename_prefix': ", message)
    assert not (tmp_path / "output").exists()


def test_4_the_longest_accepted_prefix_saves(tmp_path):
    longest = "p" * 226
    assert validate_workflow(example("text2video"), [f"7.filename_prefix={longest}"]) == []
    saved = video_io.save_video(torch.rand(2, 8, 8, 3), tmp_path, longest, "webm", 8.0)
    assert saved.path.name == f"{longest}_00001.webm" and saved.path.stat().st_size > 0


def test_4_a_temporary_name_too_long_leaves_no_placeholder(tmp_path):
    reserved = tmp_path / ("p" * 245 + "_00001.mp4")
    reserved.touch()
    with pytest.raises(OSError):
        with video_io.atomic_output(reserved):
            pass
    assert list(tmp_path.iterdir()) == []


def test_8_linked_output_subfolder_leading_outside_is_refused_at_validation(tmp_path):
    output, outside = tmp_path / "output", tmp_path / "outside"
    output.mkdir()
    outside.mkdir()
    (output / "shared").symlink_to(outside, target_is_directory=True)
    status, stderr = run_cli(tmp_path, example("text2video"), "--set", "7.filename_prefix=shared/video")
    assert_refused(status, stderr, "node 7 (T2VSaveVideo)", "input 'filename_prefix'", "leads out of the output folder")
    assert list(outside.iterdir()) == []


def test_8_a_file_where_the_subfolder_should_be_is_refused_at_validation(tmp_path):
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / "Text2Video").write_text("not a folder")
    status, stderr = run_cli(tmp_path, example("text2video"))
    assert_refused(status, stderr, "input 'filename_prefix'", "'Text2Video' is a file in the output folder")


# --------------------------------------------------------------------------- 5: model folders


def test_5_symlink_loops_in_a_models_folder_end_the_listing(tmp_path):
    models = tmp_path / "models" / "text2video"
    (models / "real-model").mkdir(parents=True)
    (models / "real-model" / "model_index.json").write_text("{}")
    (models / "a").symlink_to(".", target_is_directory=True)
    (models / "b").symlink_to(".", target_is_directory=True)
    (models / "shared").symlink_to(models / "real-model", target_is_directory=True)
    bridge.set_folders(models=tmp_path / "models")
    listed = []
    worker = threading.Thread(target=lambda: listed.append(loading.available_models()), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert listed, "listing the models folder did not finish"
    assert [name for name in listed[0] if not name.startswith("builtin:")] == ["real-model"]


# --------------------------------------------------------------------------- 6: NaN and infinity


@pytest.mark.parametrize("class_type", sorted(nodes.NODE_CLASS_MAPPINGS))
def test_6_non_finite_float_inputs_are_refused_by_validate_inputs(class_type):
    """ComfyUI's own range check lets NaN through; the node's VALIDATE_INPUTS (which the runner calls too) does not."""
    node_class = nodes.NODE_CLASS_MAPPINGS[class_type]
    declared = node_class.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, entry in (declared.get(section) or {}).items():
            if entry[0] != "FLOAT":
                continue
            for value in (math.nan, math.inf, -math.inf):
                verdict = node_class.VALIDATE_INPUTS(**{name: value})
                assert isinstance(verdict, str) and verdict.startswith(f"{class_type}: input '{name}': "), verdict
                assert "is not a usable number; give one from" in verdict


def test_6_float_inputs_named_in_validate_inputs_still_get_their_range_checked():
    assert nodes.NODE_CLASS_MAPPINGS["T2VSampler"].VALIDATE_INPUTS(cfg=7.0, denoise=0.5, eta=None) is True
    verdict = nodes.NODE_CLASS_MAPPINGS["T2VSampler"].VALIDATE_INPUTS(cfg=101.0)
    assert verdict == "T2VSampler: input 'cfg': value 101.0 is bigger than max 100.0"


@pytest.mark.parametrize("override", ["5.cfg=NaN", "5.denoise=Infinity", "5.cfg=\"nan\"", "7.fps=-Infinity"])
def test_6_the_runner_refuses_non_finite_values_before_anything_runs(tmp_path, override):
    status, stderr = run_cli(tmp_path, example("text2video"), "--set", override)
    node_id, name = override.split("=")[0].split(".")
    assert_refused(status, stderr, f"node {node_id} (", f") input '{name}': value ", "is not a usable number")
    assert not (tmp_path / "output").exists()


def test_6_a_linked_non_finite_fps_is_refused_when_the_node_runs(tmp_path):
    bridge.set_folders(output=tmp_path)
    with pytest.raises(NodeInputError, match=r"T2VSaveVideo: input 'fps': value nan is not a usable number"):
        T2VSaveVideo().save(torch.rand(2, 8, 8, 3), math.nan, "video", "webm")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 7: huge prompts


def test_7_a_five_megabyte_prompt_is_cut_early_and_logged_briefly(tiny_t2v, caplog):
    _model, clip, _vae = tiny_t2v
    words = ("a red fox jumps over the lazy dog in the snow, cinematic, highly detailed " * 70_000)[:5_000_000]
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        huge = T2VTextEncode().encode(clip, words)[0][0][0]
    assert time.monotonic() - started < 15
    reference, _negative = text2video_pipeline(*tiny_t2v).encode_prompt(words[:2000], "cpu", 1, False)
    assert torch.equal(huge, reference)
    [warning] = [record.getMessage() for record in caplog.records if "longer than 77 tokens" in record.getMessage()]
    assert "(of 5000000 characters in all)" in warning and len(warning) < 400


# --------------------------------------------------------------------------- 9, 10: Ctrl-C


SITE_HOOK = """
import os, pathlib, sys, time

class _StallTorchImport:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not os.environ.get("T2V_TEST_STALLED"):
            os.environ["T2V_TEST_STALLED"] = "1"
            pathlib.Path(os.environ["T2V_TEST_MARKER"]).touch()
            time.sleep(60)
        return None

if os.environ.get("T2V_TEST_STALL_TORCH"):
    sys.meta_path.insert(0, _StallTorchImport())
if os.environ.get("T2V_TEST_CTRL_C_AT_EXIT"):
    import atexit, signal

    def _press_and_wait():
        pathlib.Path(os.environ["T2V_TEST_MARKER"]).touch()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)

    atexit.register(_press_and_wait)
"""


def cli_process(tmp_path: Path, argv: list[str], **flags: str) -> subprocess.Popen:
    """`python -m comfyui_text2video ARGV` with the test hooks above switched on by `flags`."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(SITE_HOOK)
    path = os.pathsep.join([str(tmp_path / "hook"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "T2V_DATA_DIR": str(tmp_path / "data"), "T2V_NO_PROGRESS": "1",
           "T2V_TEST_MARKER": str(tmp_path / "marker"), **flags}
    return subprocess.Popen([sys.executable, "-m", "comfyui_text2video", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=ctrl_c_reaches_the_child)


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)


def test_9_ctrl_c_while_torch_imports_exits_130_without_traceback(tmp_path):
    process = cli_process(tmp_path, ["nodes"], T2V_TEST_STALL_TORCH="1")
    try:
        wait_for(tmp_path / "marker", process)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert stderr == "interrupted\n" and stdout == ""


def test_10_ctrl_c_while_the_interpreter_winds_down_ends_it_at_once(tmp_path):
    process = cli_process(tmp_path, ["nodes"], T2V_TEST_CTRL_C_AT_EXIT="1")
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert (tmp_path / "marker").exists() and "T2VSampler" in stdout
    assert process.returncode == -signal.SIGINT, stderr  # ended by the signal at once, not by a traceback
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr


class CleanUpProbe:
    """Presses Ctrl-C twice (stop at once), then once more while cleaning up after itself."""

    cleaned_up = False
    OUTPUT_NODE = True
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": ("LATENT",)}}

    def run(self, latent):
        try:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        finally:
            signal.raise_signal(signal.SIGINT)
            type(self).cleaned_up = True


def test_10_a_third_ctrl_c_cannot_cut_the_clean_up_short(monkeypatch):
    monkeypatch.setattr(CleanUpProbe, "cleaned_up", False)
    workflow = {"1": {"class_type": "T2VEmptyLatentVideo", "inputs": {"width": 8, "height": 8, "frames": 1,
                                                                    "batch_size": 1}},
                "2": {"class_type": "CleanUpProbe", "inputs": {"latent": ["1", 0]}}}
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RunInterrupted, match=r"interrupted at node 2 \(CleanUpProbe\)"):
        run_workflow(workflow, node_classes={**nodes.NODE_CLASS_MAPPINGS, "CleanUpProbe": CleanUpProbe})
    assert CleanUpProbe.cleaned_up
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_10_an_interrupted_save_leaves_no_empty_subfolder(tmp_path):
    def interrupt(done, total):
        raise KeyboardInterrupt

    (tmp_path / "kept").mkdir()
    with pytest.raises(KeyboardInterrupt):
        video_io.save_video(torch.rand(3, 8, 8, 3), tmp_path, "kept/new/deeper/video", "webm", 8.0,
                            on_progress=interrupt)
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")] == ["kept"]


# --------------------------------------------------------------------------- 10: damaged and huge files


def test_10_a_truncated_mp4_loads_the_frames_before_the_cut_with_a_warning(tmp_path, caplog):
    whole = video_io.save_video(torch.rand(16, 32, 32, 3), tmp_path, "whole", "mp4", 8.0).path
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:int(whole.stat().st_size * 0.6)])
    with caplog.at_level(logging.WARNING):
        loaded = video_io.read_frames(cut)
    assert 0 < loaded.frames.shape[0] < 16
    assert f"'cut.mp4' seems cut off (it declares 16 frames but only {loaded.frames.shape[0]} could be decoded)" \
        in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert video_io.read_frames(whole).frames.shape[0] == 16
    assert caplog.text == ""


def gif_with_big_screen(path: Path, frames: int, width: int, height: int) -> None:
    """A tiny GIF file whose frames each cover a `width` x `height` screen: Pillow decodes them whole."""
    data = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff")
    for _ in range(frames):
        data += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control: 100 ms
        data += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"  # one pixel
    path.write_bytes(bytes(data + b"\x3b"))


def test_10_a_huge_animated_gif_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.gif"
    gif_with_big_screen(path, 41, 6000, 6000)
    started = time.process_time()  # CPU time: decoding 1476 megapixels would take many seconds of it
    with pytest.raises(video_io.VideoIOError, match=r"'huge.gif' has 41 frames of 6000x6000; decoding 41 of them "
                                                    r"whole takes 1476 megapixels, more than the 400") as refused:
        video_io.read_frames(path, width=64)
    assert refused.value.argument == "path" and time.process_time() - started < 1
    assert "frame_limit" in refused.value.problem


def test_10_a_big_gif_within_the_budget_loads(tmp_path):
    path = tmp_path / "wide.gif"
    gif_with_big_screen(path, 3, 2000, 1000)
    loaded = video_io.read_frames(path, width=20, frame_limit=2)
    assert tuple(loaded.frames.shape) == (2, 10, 20, 3)
