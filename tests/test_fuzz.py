"""Property-based fuzzing (Hypothesis) of what a user can hand the pack: mutated example workflows in both
formats, hostile node input values, damaged video files.

Whatever comes in, the runner exits 0, 1 or 2 with no traceback, writes nothing outside its output folder,
leaves no partial or empty file, and refuses an invalid workflow within a second. Examples are derandomized
(the same ones on every run) and bounded so the suite stays a few seconds of `make test`.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import math
import os
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comfyui_text2video import bridge, nodes
from comfyui_text2video.headless.cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK, main
from comfyui_text2video.media import video_io

EXAMPLES = Path(__file__).resolve().parent.parent / "example_workflows"
NAMES = sorted(path.stem for path in EXAMPLES.glob("*.json"))

# Settings that make a valid mutant cheap to run; applied with --set after the mutation (as a user would).
# The examples missing here need ComfyUI's core nodes: the runner refuses them whatever the mutation.
CHEAP = {
    "text2video": ["4.width=16", "4.height=16", "4.frames=2", "5.steps=2"],
    "video2video_upscale": ["4.width=16", "4.height=16", "4.frames=2", "5.steps=2", "11.steps=2", "11.width=16",
                            "11.height=16"],
    "text2video_zero": ["4.steps=3", "4.t0=1", "4.t1=2", "4.width=16", "4.height=16", "4.frames=2"],
    "text2video_zero_composed": ["5.steps=3", "5.t0=1", "5.t1=2", "6.steps=3", "7.steps=3", "10.steps=3",
                                 "4.width=16", "4.height=16", "8.frames=2"],
}

FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=list(HealthCheck))

HOSTILE_VALUES = [
    None, True, False, 0, -1, 1, 2, 3, 7, 9, 2 ** 63, -2 ** 63, 10 ** 30, 0.5, -0.0, 1e308, math.nan, math.inf,
    -math.inf, "", " ", "0", "2", "nan", "-inf", "1e999", "../escape", "/etc/passwd", "a" * 300, "x\x00y",
    "Text2Video/../../x", "C:\\x", "\ud800", "line\nbreak", [], [1], ["1"], ["1", 0], ["999", 0], ["1", 99],
    [None, 0], ["1", 0, 0], [["1", 0], 0], {}, {"__value__": [1, 2]}, {"a": 1},
]
hostile = st.one_of(st.sampled_from(HOSTILE_VALUES), st.integers(-10, 10), st.text(max_size=12),
                    st.floats(allow_nan=True, allow_infinity=True))


def load(name: str, api: bool) -> dict:
    return json.loads((EXAMPLES / ("api" if api else "") / f"{name}.json").read_text())


# --------------------------------------------------------------------------- mutations


def _pick(draw, items):
    return draw(st.sampled_from(items)) if items else None


@st.composite
def api_mutants(draw):
    name = draw(st.sampled_from(NAMES))
    workflow = load(name, api=True)
    for _ in range(draw(st.integers(1, 3))):
        node_id = _pick(draw, sorted(workflow))
        node = workflow[node_id]
        names = sorted(node["inputs"]) if isinstance(node, dict) and isinstance(node.get("inputs"), dict) else []
        kind = draw(st.sampled_from(["value", "value", "value", "drop_input", "drop_node", "class_type", "inputs",
                                     "node", "link", "extra_input"]))
        if kind == "value" and names:
            node["inputs"][_pick(draw, names)] = draw(hostile)
        elif kind == "drop_input" and names:
            del node["inputs"][_pick(draw, names)]
        elif kind == "drop_node":
            del workflow[node_id]
        elif kind == "class_type" and isinstance(node, dict):
            node["class_type"] = draw(st.one_of(hostile, st.sampled_from(sorted(nodes.NODE_CLASS_MAPPINGS))))
        elif kind == "inputs" and isinstance(node, dict):
            node["inputs"] = draw(hostile)
        elif kind == "node":
            workflow[node_id] = draw(hostile)
        elif kind == "link" and names:
            node["inputs"][_pick(draw, names)] = [draw(st.one_of(st.sampled_from(sorted(workflow)), hostile)),
                                                  draw(st.one_of(st.integers(-1, 3), hostile))]
        elif kind == "extra_input" and names:
            node["inputs"][draw(st.text(max_size=8))] = draw(hostile)
        if not workflow:
            break
    if draw(st.integers(0, 9)) == 0:
        workflow = draw(st.sampled_from([[workflow], {"prompt": workflow}, nested(150), "text", 42]))
    return name, workflow


def nested(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def ui_mutants(draw):
    name = draw(st.sampled_from(NAMES))
    workflow = load(name, api=False)
    for _ in range(draw(st.integers(1, 3))):
        node = _pick(draw, workflow["nodes"])
        kind = draw(st.sampled_from(["widget", "widget", "widgets", "inputs", "slot_link", "type", "mode",
                                     "drop_node", "node_id", "link_field", "drop_link", "add_link", "extra"]))
        values = node.get("widgets_values") if isinstance(node, dict) else None
        if kind == "widget" and isinstance(values, list) and values:
            values[draw(st.integers(0, len(values) - 1))] = draw(hostile)
        elif kind == "widgets" and isinstance(node, dict):
            node["widgets_values"] = draw(st.one_of(hostile, st.just((values or [])[:-1])))
        elif kind == "inputs" and isinstance(node, dict):
            node[draw(st.sampled_from(["inputs", "outputs"]))] = draw(hostile)
        elif kind == "slot_link" and isinstance(node, dict) and isinstance(node.get("inputs"), list) and node["inputs"]:
            slot = _pick(draw, node["inputs"])
            if isinstance(slot, dict):
                slot["link"] = draw(st.one_of(hostile, st.integers(0, 20)))
        elif kind == "type" and isinstance(node, dict):
            node["type"] = draw(st.one_of(hostile, st.sampled_from(
                ["Reroute", "PrimitiveNode", "Note", "workflow>group", "0b6e1f3c-1b2a-4c5d-8e9f-0a1b2c3d4e5f",
                 *sorted(nodes.NODE_CLASS_MAPPINGS)])))
        elif kind == "mode" and isinstance(node, dict):
            node["mode"] = draw(st.sampled_from([0, 2, 4, "x", None, 99]))
        elif kind == "drop_node" and workflow["nodes"]:
            workflow["nodes"].remove(node)
        elif kind == "node_id" and isinstance(node, dict):
            node["id"] = draw(st.one_of(hostile, st.integers(1, 12)))
        elif kind == "link_field" and workflow["links"]:
            link = _pick(draw, workflow["links"])
            if isinstance(link, list) and link:
                link[draw(st.integers(0, len(link) - 1))] = draw(st.one_of(hostile, st.integers(0, 12)))
        elif kind == "drop_link" and workflow["links"]:
            workflow["links"].remove(_pick(draw, workflow["links"]))
        elif kind == "add_link":
            workflow["links"].append(draw(st.one_of(hostile, st.lists(st.integers(0, 12), min_size=6, max_size=6))))
        elif kind == "extra":
            workflow["extra"] = nested(draw(st.sampled_from([5, 99, 100, 101, 150])))
    if draw(st.integers(0, 9)) == 0:
        workflow[draw(st.sampled_from(["nodes", "links", "definitions"]))] = draw(hostile)
    return name, workflow


# --------------------------------------------------------------------------- the properties


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory, tiny_t2v, tiny_sd):
    """Where the runs happen; the built-in models are in place first (their cache is not the runs' doing)."""
    return tmp_path_factory.mktemp("fuzz")


def snapshot(folder: Path) -> dict:
    return {path.relative_to(folder).as_posix(): (path.is_dir(), 0 if path.is_dir() else path.stat().st_size,
                                                  path.stat().st_mtime_ns)
            for path in folder.rglob("*")}


@contextlib.contextmanager
def working_directory(folder: Path):
    """Run in `folder`, so that a write to a relative path would show up there."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def one_torch_thread():
    """Tiny models run fastest on one thread, and a busy CI machine does not stall in thread hand-offs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_mutant(root: Path, name: str, workflow) -> tuple[int, str, float]:
    """Run the CLI on `workflow` in a fresh folder and check what it leaves behind; returns (status, stderr, s)."""
    work = Path(tempfile.mkdtemp(dir=root))
    (work / "workflow.json").write_text(json.dumps(workflow))
    data_dir = Path(os.environ["T2V_DATA_DIR"])
    data_before = snapshot(data_dir)
    stderr = io.StringIO()
    started = time.process_time()  # CPU time: what validation costs, not how busy the machine is
    with working_directory(work), one_torch_thread(), contextlib.redirect_stdout(io.StringIO()) as stdout, \
            contextlib.redirect_stderr(stderr):
        try:
            status = main(["run", str(work / "workflow.json"), "--output-dir", str(work / "output"),
                           "--input-dir", str(work / "input"), "--device", "cpu",
                           *[f"--set={override}" for override in CHEAP.get(name, [])]])
        finally:
            bridge.reset_folders()
            bridge.set_device("auto")
    seconds = time.process_time() - started
    errors = stderr.getvalue()
    assert status in (EXIT_OK, EXIT_FAILED, EXIT_INVALID), errors
    assert "Traceback" not in errors, errors
    assert snapshot(data_dir) == data_before, "the run changed the data folder"
    assert sorted(path.name for path in work.iterdir()) in (["workflow.json"], ["output", "workflow.json"]), \
        "the run wrote outside its output folder"
    written = [path for path in (work / "output").rglob("*")] if (work / "output").exists() else []
    for path in written:
        assert not path.name.startswith(".") and not path.name.endswith(".partial"), f"partial file {path}"
        assert (any(path.iterdir()) if path.is_dir() else path.stat().st_size > 0), f"empty {path}"
    if status == EXIT_OK:
        files = [file for output in json.loads(stdout.getvalue())["outputs"] for file in output["files"]]
        assert files and all(Path(file).stat().st_size > 0 for file in files)
    else:
        assert written == [], f"a failed run left {written}"
        if status == EXIT_FAILED:
            assert errors.splitlines()[-1].startswith("node "), errors  # names the node that failed
    return status, errors, seconds


def check_outcome(status: int, errors: str, seconds: float) -> None:
    if status == EXIT_INVALID:
        assert seconds < 1.0, f"validation took {seconds:.2f} CPU seconds"


@settings(FUZZ, max_examples=45)
@given(mutant=api_mutants())
def test_mutated_api_workflows_fail_cleanly(fuzz_root, mutant):
    check_outcome(*run_mutant(fuzz_root, *mutant))


@settings(FUZZ, max_examples=45)
@given(mutant=ui_mutants())
def test_mutated_editor_workflows_fail_cleanly(fuzz_root, mutant):
    check_outcome(*run_mutant(fuzz_root, *mutant))


def validated_inputs() -> list[tuple[str, dict[str, str]]]:
    """Node classes with VALIDATE_INPUTS, and the socket type of each input it takes."""
    found = []
    for class_type, node_class in sorted(nodes.NODE_CLASS_MAPPINGS.items()):
        if hasattr(node_class, "VALIDATE_INPUTS"):
            declared = node_class.INPUT_TYPES()
            entries = {**declared.get("required", {}), **declared.get("optional", {})}
            found.append((class_type, {name: entries[name][0] if isinstance(entries[name][0], str) else "COMBO"
                                       for name in inspect.signature(node_class.VALIDATE_INPUTS).parameters}))
    return found


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_validate_inputs_answers_true_or_a_message_for_any_value(fuzz_root, data):
    """What ComfyUI hands VALIDATE_INPUTS after its own conversion (or, for a failed conversion, the raw value)."""
    class_type, parameters = data.draw(st.sampled_from(validated_inputs()))
    # ComfyUI converts STRING values with str(), which never fails; other values may arrive unconverted
    arguments = {name: data.draw(st.one_of(st.text(max_size=12), hostile.map(str)) if kind == "STRING" else hostile)
                 for name, kind in parameters.items() if data.draw(st.booleans())}
    bridge.set_folders(output=fuzz_root / "validate-output", input=fuzz_root / "validate-input")
    try:
        verdict = nodes.NODE_CLASS_MAPPINGS[class_type].VALIDATE_INPUTS(**arguments)
    finally:
        bridge.reset_folders()
    assert verdict is True or (isinstance(verdict, str) and verdict.startswith(f"{class_type}: input '"))
    assert not (fuzz_root / "validate-output").exists()


@pytest.fixture(scope="module")
def sample_videos(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("fuzz-videos")
    frames = torch.rand(6, 16, 24, 3, generator=torch.Generator().manual_seed(0))
    return {video_format: video_io.save_video(frames, folder, "clip", video_format, 8.0).path.read_bytes()
            for video_format in ("mp4", "webm", "gif", "webp")}


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_damaged_video_files_load_or_fail_with_a_path_error(sample_videos, tmp_path_factory, data):
    video_format = data.draw(st.sampled_from(sorted(sample_videos)))
    content = bytearray(sample_videos[video_format])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["cut", "flip", "zero", "splice"]))
        position = data.draw(st.integers(0, max(len(content) - 1, 0)))
        if kind == "cut":
            del content[position:]
        elif kind == "flip" and content:
            content[position] ^= data.draw(st.integers(1, 255))
        elif kind == "zero":
            content[position:position + data.draw(st.integers(1, 64))] = bytes(64)
        else:
            content[position:position] = data.draw(st.binary(max_size=32))
    path = tmp_path_factory.mktemp("damaged") / f"clip.{video_format}"
    path.write_bytes(bytes(content))
    try:
        loaded = video_io.read_frames(path, width=data.draw(st.sampled_from([0, 8, 64])),
                                      frame_limit=data.draw(st.integers(0, 3)))
    except video_io.VideoIOError as error:
        assert error.argument in ("path", "skip_first") and path.name in error.problem
    else:
        assert loaded.frames.dtype == torch.uint8 and loaded.frames.shape[0] >= 1 and math.isfinite(loaded.fps)
