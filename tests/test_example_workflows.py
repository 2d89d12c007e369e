"""The example workflows: editor and API twins agree, and each renders under the runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_text2video.media import video_io
from comfyui_text2video.headless.runner import run_workflow
from comfyui_text2video.headless.workflow import prepare_workflow

EXAMPLES = Path(__file__).resolve().parent.parent / "example_workflows"
NEED_COMFYUI = {"text2video_zero_checkpoint", "text2video_zero_controlnet", "video_instruct_pix2pix_checkpoint"}
"""Examples on ComfyUI's own models and nodes: the integration tests render them in a real ComfyUI."""
NAMES = sorted(path.stem for path in EXAMPLES.glob("*.json") if path.stem not in NEED_COMFYUI)

# Cheap settings for the tiny models, and what the written video must then look like (frames, width, height).
SMALL = {
    "text2video": (["4.width=64", "4.height=48", "4.frames=4", "5.steps=3"], (4, 64, 48)),
    "video2video_upscale": (["4.width=64", "4.height=32", "4.frames=3", "5.steps=3", "11.steps=3", "11.width=128",
                             "11.height=64"], (3, 128, 64)),
    "text2video_zero": (["4.steps=6", "4.t0=2", "4.t1=4", "4.width=64", "4.height=48", "4.frames=4"], (4, 64, 48)),
    "text2video_zero_composed": (["5.steps=6", "5.t0=2", "5.t1=4", "6.steps=6", "7.steps=6", "10.steps=6",
                                  "4.width=64", "4.height=48", "8.frames=4"], (4, 64, 48)),
    "text2video_zero_sdxl": (["4.steps=6", "4.t0=2", "4.t1=4", "4.width=64", "4.height=48", "4.frames=3"],
                             (3, 64, 48)),
    "controlnet_video": (["4.width=64", "4.height=48", "4.frame_limit=3", "8.width=64", "8.height=48", "9.steps=3"],
                         (3, 64, 48)),
    "instruct_pix2pix_video": (["4.width=64", "4.height=48", "4.frame_limit=3", "7.steps=3"], (3, 64, 48)),
    "animatediff": (["4.width=64", "4.height=48", "4.frames=4", "7.steps=3"], (4, 64, 48)),
    "animatediff_video2video": (["4.width=64", "4.height=48", "4.frame_limit=3", "7.steps=3"], (3, 64, 48)),
    "i2vgen_xl_image_to_video": (["5.width=64", "5.height=48", "5.frames=4", "6.steps=3"], (4, 64, 48)),
    "svd_image_to_video": (["3.width=64", "3.height=48", "3.frames=3", "4.steps=3"], (3, 64, 48)),
}


@pytest.fixture(scope="module", autouse=True)
def input_clip(data_dir):
    """The clip the video-editing examples load: `clip.mp4` in the input folder."""
    import torch

    from comfyui_text2video import bridge

    path = bridge.input_directory() / "clip.mp4"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = torch.linspace(0, 1, 4).view(4, 1, 1, 1).expand(4, 48, 64, 3).contiguous()
        video_io.write_video(frames, path, "mp4", fps=4.0)
    return path


def load(name: str, api: bool = False) -> dict:
    return json.loads((EXAMPLES / ("api" if api else "") / f"{name}.json").read_text())


def test_every_example_has_an_api_twin_and_small_settings():
    assert NAMES == sorted(SMALL)
    assert sorted(path.stem for path in (EXAMPLES / "api").glob("*.json")) == sorted([*NAMES, *NEED_COMFYUI])


@pytest.mark.parametrize("name", sorted(path.stem for path in EXAMPLES.glob("*.json")))
def test_every_example_is_laid_out_by_the_editor_and_has_a_template_thumbnail(name):
    """A hand-written example shows as a stack of equal boxes and a grey card in the template browser:
    `tests/browser/lay_out_examples.py NAME` lays it out as the editor sizes its nodes and writes the thumbnail."""
    from PIL import Image

    sizes = {tuple(node["size"]) for node in load(name)["nodes"]}
    assert len(sizes) > 1, f"{name}: every node has the size {sizes}"
    with Image.open(EXAMPLES / f"{name}.jpg") as thumbnail:
        assert thumbnail.size == (512, 384)


def widget_names(node_class) -> list[str]:
    """The widgets the editor saves for a node, in order: its widget inputs, a seed's control value after the
    seed, the upload button's value after the input that has it."""
    declared = node_class.INPUT_TYPES()
    names = []
    for name, (kind, *options) in [*declared["required"].items(), *declared.get("optional", {}).items()]:
        if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
            names.append(name)
            names += ["control_after_generate"] if name == "seed" else []
        names += ["upload"] if options and options[0].get("video_upload") else []
    return names


@pytest.mark.parametrize("name", sorted(path.stem for path in EXAMPLES.glob("*.json")))
def test_every_pack_node_in_an_example_saves_a_value_for_each_widget(name):
    """An input appended to a node leaves the examples one value short: the editor then fills in the default
    and the example no longer shows what its file says (the browser tests compare both)."""
    from comfyui_text2video import NODE_CLASS_MAPPINGS

    for node in load(name)["nodes"]:
        if node["type"] in NODE_CLASS_MAPPINGS:
            expected = widget_names(NODE_CLASS_MAPPINGS[node["type"]])
            assert len(node["widgets_values"]) == len(expected), (name, node["id"], node["type"], expected)


@pytest.mark.parametrize("name", NAMES)
def test_editor_file_and_api_twin_give_the_same_prompt(name):
    from_editor = prepare_workflow(load(name))
    from_api = prepare_workflow(load(name, api=True))
    assert not from_editor.problems and not from_api.problems
    assert from_editor.prompt.keys() == from_api.prompt.keys()
    for node_id, node in from_api.prompt.items():
        editor_node = from_editor.prompt[node_id]
        assert editor_node["class_type"] == node["class_type"]
        assert {key: editor_node["inputs"][key] for key in node["inputs"]} == node["inputs"]


def video_shape(files: list[str]) -> tuple[int, int, int]:
    loaded = video_io.read_frames(files[0])
    frames, height, width, _ = loaded.frames.shape
    return frames, width, height


@pytest.mark.parametrize("name", NAMES)
def test_example_renders_under_the_runner(name):
    overrides, expected = SMALL[name]
    summary = run_workflow(load(name), overrides)
    files = summary["outputs"][0]["files"]
    assert len(files) == 1 and files[0].endswith(".mp4") and Path(files[0]).is_file()
    assert video_shape(files) == expected


def test_api_twin_renders_too():
    overrides, expected = SMALL["text2video"]
    summary = run_workflow(load("text2video", api=True), overrides)
    assert video_shape(summary["outputs"][0]["files"]) == expected


def test_an_escaping_filename_prefix_is_refused_before_anything_runs():
    from comfyui_text2video.headless.workflow import validate_workflow

    problems = validate_workflow(load("text2video", api=True), ['7.filename_prefix="../../escape"'])
    assert [str(problem) for problem in problems] == [
        "node 7 (T2VSaveVideo) input 'filename_prefix': '../../escape' leads out of the output "
        "folder ('..'); remove the '..'"]
