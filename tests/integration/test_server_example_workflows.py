"""The editor-format workflows in example_workflows/ are valid against the real server's `/object_info`, and
the examples on the pack's built-in models render there.

UI workflows store widget values by position: this walks each node's inputs in `/object_info` order and
checks that every stored value fits its input (type, range, combo choice), so a renamed, reordered or
re-ranged input shows up here before a user's saved workflow breaks. The examples on ComfyUI's own models
render in `test_server_core_model.py`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from comfy_harness import PACK_ROOT
from saved_outputs import video_shape, written_files
from test_example_workflows import SMALL

EXAMPLES = sorted((PACK_ROOT / "example_workflows").glob("*.json"))
FRONTEND_ONLY_NODES = {"Reroute", "PrimitiveNode", "Note", "MarkdownNote"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FOLDER_COMBOS = {("T2VModelLoader", "model_name"), ("T2VLoadVideo", "video"), ("LoadImage", "image"),
                 ("LoadVideo", "file"), ("CheckpointLoaderSimple", "ckpt_name"), ("LoraLoader", "lora_name"),
                 ("ControlNetLoader", "control_net_name")}
"""Combos listing files of the user's folders: a saved name need not exist on the test server."""
SEED_CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


def widget_inputs(info: dict) -> list[tuple[str, object, dict]]:
    """`(name, type or choices, options)` of the inputs the editor shows as widgets, in widget order."""
    widgets = []
    for section in ("required", "optional"):
        specs = info["input"].get(section, {})
        for name in info["input_order"].get(section, []):
            kind, options = specs[name][0], (specs[name][1] if len(specs[name]) > 1 else {})
            if options.get("forceInput"):
                continue
            if isinstance(kind, list) or kind in WIDGET_TYPES:
                widgets.append((name, options.get("options", []) if kind == "COMBO" else kind, options))
    return widgets


def value_problem(node_type: str, name: str, kind, options: dict, value) -> str | None:
    """Why `value` does not fit the input, or None."""
    if isinstance(kind, list):
        if (node_type, name) in FOLDER_COMBOS:
            builtin = isinstance(value, str) and value.startswith("builtin:")
            return None if isinstance(value, str) and (not builtin or value in kind) else f"{value!r} is no file name"
        return None if value in kind else f"{value!r} is not one of {kind}"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if kind == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not a string"
    if kind == "INT" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{value!r} is not an integer"
    if kind == "FLOAT" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"{value!r} is not a number"
    if "min" in options and value < options["min"]:
        return f"{value} is below the minimum {options['min']}"
    if "max" in options and value > options["max"]:
        return f"{value} is above the maximum {options['max']}"
    return None


def is_upload(options: dict) -> bool:
    return bool(options.get("image_upload") or options.get("video_upload"))


def node_problems(node: dict, object_info: dict) -> list[str]:
    node_type = node["type"]
    label = f"node {node['id']} ({node_type})"
    if node_type not in object_info:
        return [f"{label}: no such node type on the server"]
    values = node.get("widgets_values") or []
    if not isinstance(values, list):
        return [f"{label}: widgets_values is a {type(values).__name__}; the stock nodes store a list"]
    widgets = widget_inputs(object_info[node_type])
    expected = len(widgets) + sum(1 for _n, _k, options in widgets if options.get("control_after_generate"))
    uploads = sum(1 for _n, _k, options in widgets if is_upload(options))
    if len(values) not in (expected, expected + uploads):
        return [f"{label}: {len(values)} widget values, expected {expected} for the widgets "
                f"{[w[0] for w in widgets]} and a control_after_generate value after each seed"]
    # recent editors keep the upload button's value, after all other widgets
    remaining = list(values[:expected])
    problems = []
    for name, kind, options in widgets:
        problem = value_problem(node_type, name, kind, options, remaining.pop(0))
        if problem:
            problems.append(f"{label}: input '{name}': {problem}")
        if options.get("control_after_generate"):
            control = remaining.pop(0)
            if control not in SEED_CONTROL_VALUES:
                problems.append(f"{label}: input '{name}': control_after_generate value {control!r}")
    return problems


@pytest.mark.skipif(not EXAMPLES, reason="example_workflows/ has no workflows yet")
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_workflow_fits_the_servers_nodes(comfy, path: Path):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(workflow.get("nodes"), list), f"{path.name} is not an editor (UI-format) workflow"
    object_info = comfy.object_info()
    problems = [problem for node in workflow["nodes"] if node["type"] not in FRONTEND_ONLY_NODES
                for problem in node_problems(node, object_info)]
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def example_clip(comfy, sample_video):
    """`clip.mp4`, the clip the video-editing examples load, in the server's input folder."""
    path = comfy.input_dir / "clip.mp4"
    if not path.exists():
        shutil.copyfile(sample_video, path)
    return path


@pytest.mark.parametrize("name", sorted(SMALL))
def test_example_on_the_builtin_models_renders_in_the_server(comfy, example_clip, name):
    """The API twin, queued as a user's script would, at the small settings of the headless test."""
    prompt = json.loads((PACK_ROOT / "example_workflows" / "api" / f"{name}.json").read_text(encoding="utf-8"))
    overrides, expected = SMALL[name]
    for override in overrides:
        key, value = override.split("=", 1)
        node_id, input_name = key.split(".")
        assert input_name in prompt[node_id]["inputs"], override
        prompt[node_id]["inputs"][input_name] = json.loads(value)
    (save,) = [node_id for node_id, node in prompt.items() if node["class_type"] == "T2VSaveVideo"]
    prompt[save]["inputs"]["filename_prefix"] = f"it/examples/{name}"
    run = comfy.run(prompt)
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run, save)
    assert video.suffix == ".mp4" and video_shape(video) == expected
