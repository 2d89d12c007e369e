"""Loading both workflow formats into one API graph, overrides, and whole-graph validation."""

from __future__ import annotations

import copy
import json
import uuid

import pytest

from comfyui_text2video.headless.workflow import (
    NodeSpecs,
    Override,
    WorkflowError,
    load_workflow,
    prepare_workflow,
    types_match,
    validate_workflow,
)
from fake_workflow_nodes import NODE_CLASS_MAPPINGS, UiWorkflow, standard_api, standard_ui


def to_api(ui: dict) -> dict:
    return load_workflow(ui, NodeSpecs(NODE_CLASS_MAPPINGS)).prompt


def problems_of(data: dict, overrides=()) -> list[str]:
    return [str(problem) for problem in validate_workflow(data, overrides, NODE_CLASS_MAPPINGS)]


# --------------------------------------------------------------------------- UI -> API


def test_ui_widgets_by_position_skip_the_seed_control_value():
    assert to_api(standard_ui().build()) == standard_api()


def test_api_format_passes_through_and_is_valid():
    assert to_api(standard_api()) == standard_api()
    assert problems_of(standard_api()) == []
    assert problems_of(standard_ui().build()) == []


def test_upload_button_value_comes_after_the_optional_widgets_as_the_editor_saves_it():
    ui = UiWorkflow()
    ui.node(1, "FakeUpload", ["b.mp4", 12, 320, "image"], outputs=["LATENT"])
    assert to_api(ui.build())["1"]["inputs"] == {"video": "b.mp4", "frame_limit": 12, "width": 320}


def test_saved_widget_inputs_say_which_widgets_the_node_had_when_it_was_saved():
    """A node saved before its optional `width` existed: the upload value sits where width is now."""
    ui = UiWorkflow()
    ui.node(1, "FakeUpload", ["b.mp4", 12, "image"], outputs=["LATENT"],
            inputs=[("video", "COMBO", "video"), ("frame_limit", "INT", "frame_limit")])
    assert to_api(ui.build())["1"]["inputs"] == {"video": "b.mp4", "frame_limit": 12, "width": 0}
    ui.nodes[1]["widgets_values"] = ["b.mp4", 12, 16, "image"]  # saved with width: the class's layout
    assert to_api(ui.build())["1"]["inputs"]["width"] == 16


def test_an_override_lands_in_the_saved_layout_of_the_ui_workflow():
    ui = UiWorkflow()
    ui.node(1, "FakeUpload", ["b.mp4", 12, "image"], outputs=["LATENT"],
            inputs=[("video", "COMBO", "video"), ("frame_limit", "INT", "frame_limit")])
    prepared = prepare_workflow(ui.build(), ["1.frame_limit=5"], NODE_CLASS_MAPPINGS)
    assert prepared.ui_workflow["nodes"][0]["widgets_values"] == ["b.mp4", 5, "image"]


def test_missing_trailing_widget_values_get_defaults_and_dict_values_go_by_name():
    ui = standard_ui()
    ui.nodes[4]["widgets_values"] = [7, "fixed", 12]  # saved before cfg, sampler_name, eta existed
    ui.nodes[3]["widgets_values"] = {"frames": 24, "width": 256, "unrelated": 1}
    prompt = to_api(ui.build())
    assert prompt["4"]["inputs"] | {"model": 0, "positive": 0, "latent": 0} == {
        "model": 0, "positive": 0, "latent": 0, "seed": 7, "steps": 12, "cfg": 7.5, "sampler_name": "ddim",
        "eta": 0.0}
    assert prompt["3"]["inputs"] == {"width": 256, "frames": 24}


def test_converted_widget_takes_its_link_and_keeps_its_slot():
    ui = standard_ui()
    ui.node(6, "FakeEmptyLatent", [64, 8], outputs=["LATENT"])
    ui.nodes[4]["inputs"].append({"name": "seed", "type": "INT", "link": None, "widget": {"name": "seed"}})
    ui.nodes[6]["outputs"][0]["type"] = "INT"  # pretend node 6 yields an INT
    ui.link(6, 0, 4, "seed")
    inputs = to_api(ui.build())["4"]["inputs"]
    assert inputs["seed"] == ["6", 0]
    assert (inputs["steps"], inputs["cfg"], inputs["sampler_name"]) == (30, 6.5, "euler")


def test_primitive_node_feeds_its_value_to_every_target():
    ui = standard_ui()
    ui.node(7, "PrimitiveNode", [99, "fixed"], outputs=["INT"])
    ui.node(8, "FakeSampler", [1, "fixed", 5, 1.0, "ddim", 0.0],
            inputs=[("model", "T2V_MODEL"), ("positive", "CONDITIONING"), ("latent", "LATENT")], outputs=["LATENT"])
    for target in (4, 8):
        ui.nodes[target]["inputs"].append({"name": "steps", "type": "INT", "link": None, "widget": {"name": "steps"}})
        ui.link(7, 0, target, "steps")
    prompt = to_api(ui.build())
    assert "7" not in prompt
    assert prompt["4"]["inputs"]["steps"] == 99 and prompt["8"]["inputs"]["steps"] == 99
    assert prompt["4"]["inputs"]["seed"] == 42


def test_reroute_passes_the_link_through():
    ui = standard_ui()
    ui.node(9, "Reroute", inputs=[("", "*")], outputs=["T2V_MODEL"])
    ui.nodes[4]["inputs"][0]["link"] = None
    ui.link(1, 0, 9, "")
    ui.link(9, 0, 4, "model")
    prompt = to_api(ui.build())
    assert "9" not in prompt and prompt["4"]["inputs"]["model"] == ["1", 0]


def test_notes_are_ignored():
    ui = standard_ui()
    ui.node(10, "Note", ["remember the fox"])
    ui.node(11, "MarkdownNote", ["# title"])
    assert to_api(ui.build()) == standard_api()


def test_muted_node_is_left_out_and_its_consumer_reports_the_missing_input():
    ui = standard_ui()
    ui.nodes[2]["mode"] = 2
    assert "2" not in to_api(ui.build())
    assert problems_of(ui.build()) == [
        "node 4 (FakeSampler) input 'positive': required input is missing "
        "(its source, node 2 (FakeEncode), is muted)"]


def test_muted_source_of_an_optional_input_is_no_problem():
    ui = standard_ui()
    ui.node(6, "FakeEmptyLatent", [64, 8], outputs=["FLOAT"], mode=2)
    ui.nodes[4]["inputs"].append({"name": "eta", "type": "FLOAT", "link": None, "widget": {"name": "eta"}})
    ui.link(6, 0, 4, "eta")
    assert to_api(ui.build())["4"]["inputs"]["eta"] == 0.25  # the widget keeps its value, as in the editor
    assert problems_of(ui.build()) == []


def test_bypassed_node_passes_the_input_of_the_matching_type():
    ui = standard_ui()
    ui.node(6, "FakePatch", inputs=[("clip", "T2V_CLIP"), ("model", "T2V_MODEL")], outputs=["T2V_MODEL"], mode=4)
    ui.nodes[4]["inputs"][0]["link"] = None
    ui.link(1, 1, 6, "clip")
    ui.link(1, 0, 6, "model")
    ui.link(6, 0, 4, "model")
    prompt = to_api(ui.build())
    assert "6" not in prompt and prompt["4"]["inputs"]["model"] == ["1", 0]
    ui.nodes[6]["mode"] = 0
    assert to_api(ui.build())["4"]["inputs"]["model"] == ["6", 0]


def test_bypassed_node_without_a_matching_connected_input_leaves_the_input_missing():
    ui = standard_ui()
    ui.node(6, "FakePatch", inputs=[("clip", "T2V_CLIP"), ("model", "T2V_MODEL")], outputs=["T2V_MODEL"], mode=4)
    ui.nodes[4]["inputs"][0]["link"] = None
    ui.link(1, 1, 6, "clip")
    ui.link(6, 0, 4, "model")
    assert problems_of(ui.build()) == [
        "node 4 (FakeSampler) input 'model': required input is missing (its source, node 6 (FakePatch), "
        "is bypassed and its matching input is not connected)"]


@pytest.mark.parametrize("with_definitions", [True, False])
def test_subgraphs_are_refused(with_definitions):
    ui = standard_ui()
    subgraph_id = str(uuid.uuid4())
    ui.node(12, subgraph_id, [], inputs=[("samples", "LATENT")])
    data = ui.build()
    if with_definitions:
        data["definitions"] = {"subgraphs": [{"id": subgraph_id, "nodes": [], "links": []}]}
    problems = problems_of(data)
    assert problems == [f"node 12 ({subgraph_id}): subgraphs are not supported yet; convert to nodes "
                        "(right-click the subgraph > Unpack Subgraph)"]


def test_link_objects_of_the_newer_ui_schema_are_read():
    data = standard_ui().build()
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    data["links"] = [dict(zip(keys, link)) for link in data["links"]]
    assert to_api(data) == standard_api()


@pytest.mark.parametrize("data", [[1, 2], {"prompt": {}, "client_id": "x"}, "text"])
def test_data_that_is_no_workflow_is_refused(data):
    with pytest.raises(WorkflowError, match="not a ComfyUI workflow"):
        prepare_workflow(data, node_classes=NODE_CLASS_MAPPINGS)


# --------------------------------------------------------------------------- validation


def test_every_problem_is_reported_at_once():
    api = standard_api()
    api["2"]["inputs"]["clip"] = ["1", 0]  # a T2V_MODEL into a T2V_CLIP input
    api["3"]["inputs"].update(width=4, frames=65)
    api["4"]["inputs"].update(steps="many", sampler_name="dpm", model=["1", 5])
    del api["4"]["inputs"]["cfg"]
    api["6"] = {"class_type": "VHS_VideoCombine", "inputs": {}}
    api["7"] = {"class_type": "FakeSave", "inputs": {"samples": ["30", 0], "filename_prefix": "x"}}
    api["8"] = {"class_type": "FakeSave", "inputs": {"samples": 5, "filename_prefix": "x"}}
    assert problems_of(api) == [
        "node 2 (FakeEncode) input 'clip': linked to output 0 of node 1 (FakeLoader), which is T2V_MODEL, "
        "but the input takes T2V_CLIP",
        "node 3 (FakeEmptyLatent) input 'width': value 4 is smaller than min 8",
        "node 3 (FakeEmptyLatent) input 'frames': value 65 is bigger than max 64",
        "node 4 (FakeSampler) input 'model': linked to output 5 of node 1 (FakeLoader), which has 2 output(s)",
        "node 4 (FakeSampler) input 'steps': value 'many' is not an integer",
        "node 4 (FakeSampler) input 'cfg': required input is missing",
        "node 4 (FakeSampler) input 'sampler_name': value 'dpm' is not one of: 'ddim', 'euler'",
        "node 6 (VHS_VideoCombine): unknown node type 'VHS_VideoCombine' (not a node of this pack)",
        "node 7 (FakeSave) input 'samples': linked to node 30, which is not in the workflow",
        "node 8 (FakeSave) input 'samples': takes a link from a LATENT output, not a value",
    ]


def test_problem_fields_carry_comfyui_error_kinds():
    api = standard_api()
    api["4"]["inputs"]["steps"] = 0
    [problem] = validate_workflow(api, node_classes=NODE_CLASS_MAPPINGS)
    assert (problem.kind, problem.node_id, problem.class_type, problem.input_name) == (
        "value_smaller_than_min", "4", "FakeSampler", "steps")
    assert str(problem) == "node 4 (FakeSampler) input 'steps': value 0 is smaller than min 1"


def test_constants_are_converted_to_their_input_types():
    api = standard_api()
    api["4"]["inputs"].update(seed="7", cfg=3, steps=12.0)
    prepared = prepare_workflow(api, node_classes=NODE_CLASS_MAPPINGS)
    assert prepared.problems == []
    inputs = prepared.prompt["4"]["inputs"]
    assert (inputs["seed"], inputs["cfg"], inputs["steps"]) == (7, 3.0, 12)
    assert isinstance(inputs["cfg"], float)


def test_only_what_the_outputs_need_is_checked_and_ordered():
    api = standard_api()
    api["8"] = {"class_type": "FakeEmptyLatent", "inputs": {"width": 1, "frames": 1}}  # dangling and invalid
    prepared = prepare_workflow(api, node_classes=NODE_CLASS_MAPPINGS)
    assert prepared.problems == []
    assert prepared.order == ["1", "2", "3", "4", "5"]


def test_custom_validation_replaces_the_range_check_and_reports_its_message():
    api = standard_api()
    api["6"] = {"class_type": "FakeRangeChecker", "inputs": {"latent": ["3", 0], "steps": 12}}  # above max 8
    api["5"]["inputs"]["samples"] = ["6", 0]
    assert problems_of(api) == []
    api["6"]["inputs"]["steps"] = 3
    assert problems_of(api) == ["node 6 (FakeRangeChecker): steps must be even, got 3"]


def test_exception_in_custom_validation_is_a_problem(monkeypatch):
    def explode(cls, steps):
        raise RuntimeError("no")

    monkeypatch.setattr(NODE_CLASS_MAPPINGS["FakeRangeChecker"], "VALIDATE_INPUTS", classmethod(explode))
    api = standard_api()
    api["6"] = {"class_type": "FakeRangeChecker", "inputs": {"latent": ["3", 0], "steps": 2}}
    api["5"]["inputs"]["samples"] = ["6", 0]
    [problem] = validate_workflow(api, node_classes=NODE_CLASS_MAPPINGS)
    assert problem.kind == "exception_during_validation" and "RuntimeError: no" in problem.message


def test_cycles_and_missing_outputs_are_problems():
    api = standard_api()
    api["3"] = {"class_type": "FakeRangeChecker", "inputs": {"latent": ["4", 0], "steps": 2}}
    assert "depends on its own output" in " ".join(problems_of(api))
    del api["5"]
    assert problems_of(api) == ["workflow: it has no output node, so nothing would be saved"]


@pytest.mark.parametrize("output_type, input_type, expected", [
    ("LATENT", "LATENT", True), ("LATENT", "IMAGE", False), ("*", "IMAGE", True), ("IMAGE", "*", True),
    ("IMAGE,MASK", "MASK", True), ("INT", "FLOAT,STRING", False), (["a", "b"], ["a"], True),
])
def test_types_match(output_type, input_type, expected):
    assert types_match(output_type, input_type) is expected


# --------------------------------------------------------------------------- overrides


@pytest.mark.parametrize("text, node_id, input_name, value", [
    ("4.steps=12", "4", "steps", 12), ("4.cfg=2.5", "4", "cfg", 2.5), ("2.text=a cat", "2", "text", "a cat"),
    ("9.flag=true", "9", "flag", True), ('2.text="7"', "2", "text", "7"), ("2.text=x=y", "2", "text", "x=y"),
])
def test_override_values_are_json_or_text(text, node_id, input_name, value):
    override = Override.parse(text)
    assert (override.node_id, override.input_name, override.value) == (node_id, input_name, value)


@pytest.mark.parametrize("text", ["steps=3", "4.=3", "4.steps", ".steps=1"])
def test_malformed_overrides_are_refused(text):
    with pytest.raises(WorkflowError, match="NODE_ID.INPUT=VALUE"):
        Override.parse(text)


@pytest.mark.parametrize("make", [standard_api, lambda: standard_ui().build()])
def test_overrides_apply_to_both_formats(make):
    data = make()
    original = copy.deepcopy(data)
    prepared = prepare_workflow(data, ["4.steps=12", "2.text=2024", "5.filename_prefix=run"], NODE_CLASS_MAPPINGS)
    assert prepared.problems == []
    assert prepared.prompt["4"]["inputs"]["steps"] == 12
    assert prepared.prompt["2"]["inputs"]["text"] == "2024"  # a text input keeps the text
    assert prepared.prompt["5"]["inputs"]["filename_prefix"] == "run"
    assert data == original


def test_overrides_reach_the_embedded_ui_workflow():
    prepared = prepare_workflow(standard_ui().build(), ["4.steps=12", "4.seed=5"], NODE_CLASS_MAPPINGS)
    sampler = next(node for node in prepared.ui_workflow["nodes"] if node["id"] == 4)
    assert sampler["widgets_values"] == [5, "randomize", 12, 6.5, "euler", 0.25]


def test_override_of_a_link_replaces_it_and_is_validated():
    prepared = prepare_workflow(standard_api(), ["4.latent=3"], NODE_CLASS_MAPPINGS)
    assert [str(p) for p in prepared.problems] == [
        "node 4 (FakeSampler) input 'latent': takes a link from a LATENT output, not a value"]
    assert problems_of(standard_api(), ["4.steps=500"]) == [
        "node 4 (FakeSampler) input 'steps': value 500 is bigger than max 100"]


def test_overrides_naming_nothing_are_problems():
    ui = standard_ui()
    ui.nodes[3]["mode"] = 4
    assert problems_of(ui.build(), ["40.steps=1", "4.stepz=1", "3.width=64"]) == [
        "node 3 input 'width': --set: it is bypassed",
        "node 4 (FakeSampler) input 'stepz': --set: the node has no such input (it has: model, positive, latent, "
        "seed, steps, cfg, sampler_name, eta)",
        "node 4 (FakeSampler) input 'latent': required input is missing "
        "(its source, node 3 (FakeEmptyLatent), is bypassed and has no input of type LATENT to pass through)",
        "node 40 input 'steps': --set: no node has this id",
    ]


def test_an_editor_saved_load_video_node_maps_every_widget_by_name(tmp_path):
    """What frontend 1.27 saves for T2VLoadVideo: a widget input per widget, the upload button's value last."""
    from comfyui_text2video import nodes

    ui = UiWorkflow()
    ui.node(1, "T2VLoadVideo", ["clip.mp4", 16, 2, 3, 64, 48, "image"], outputs=["IMAGE", "FLOAT", "INT"],
            inputs=[(name, kind, name) for name, kind in [("video", "COMBO"), ("frame_limit", "INT"),
                                                          ("skip_first", "INT"), ("select_every_nth", "INT"),
                                                          ("width", "INT"), ("height", "INT"),
                                                          ("upload", "IMAGEUPLOAD")]])
    prompt = load_workflow(ui.build(), NodeSpecs(nodes.NODE_CLASS_MAPPINGS)).prompt
    assert prompt["1"]["inputs"] == {"video": "clip.mp4", "frame_limit": 16, "skip_first": 2, "select_every_nth": 3,
                                     "width": 64, "height": 48}


def test_a_workflow_saved_by_the_real_editor_converts_with_every_widget_in_place():
    """tests/data/editor_saved_load_video.json: File > Save in ComfyUI 0.3.64 (frontend 1.27.10) with the pack."""
    from pathlib import Path

    from comfyui_text2video import nodes

    saved = json.loads((Path(__file__).parent / "data" / "editor_saved_load_video.json").read_text())
    prompt = load_workflow(saved, NodeSpecs(nodes.NODE_CLASS_MAPPINGS)).prompt
    [load] = [node for node in prompt.values() if node["class_type"] == "T2VLoadVideo"]
    [save] = [node for node in prompt.values() if node["class_type"] == "T2VSaveVideo"]
    assert load["inputs"] == {"video": "clip.webp", "frame_limit": 6, "skip_first": 1, "select_every_nth": 2,
                              "width": 40, "height": 32}
    assert save["inputs"] | {"images": 0, "fps": 0} == {"images": 0, "fps": 0, "filename_prefix": "Text2Video/video",
                                                        "format": "png", "quality": 85}
