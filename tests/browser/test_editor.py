"""The pack in the ComfyUI editor, tried as a user would in a real browser (see conftest.py for what it needs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from comfyui_text2video.media import video_io

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "example_workflows").glob("*.json"))
ON_USER_CHECKPOINTS = {"text2video_zero_checkpoint", "text2video_zero_controlnet", "video_instruct_pix2pix_checkpoint"}
"""Examples on the user's own checkpoint, LoRA and ControlNet files: they run here on small files made for the
purpose (`user_files`), as in tests/integration/test_server_core_model.py."""
RUNNABLE = [path for path in EXAMPLES if path.stem not in ON_USER_CHECKPOINTS]
FORMATS_IN_A_ROW = ["mp4", "webp", "gif", "png", "webm", "mp4"]
"""The issue's sequence: a video first, then image kinds, then a video again, all on one save node."""
ELEMENT_OF_FORMAT = {"mp4": "video", "webm": "video", "gif": "img", "webp": "img", "png": "img"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """A 24-frame 64x48 clip at 12 fps in every format the loader reads from a file."""
    folder = tmp_path_factory.mktemp("clips")
    frames = torch.zeros(24, 48, 64, 3)
    frames[..., 0] = torch.linspace(0, 1, 24).view(24, 1, 1)
    frames[..., 1] = torch.linspace(0, 1, 64).view(1, 1, 64)
    frames[..., 2] = torch.linspace(1, 0, 48).view(1, 48, 1)
    paths = {}
    for video_format in ("mp4", "webm", "gif", "webp"):
        paths[video_format] = folder / f"clip.{video_format}"
        video_io.write_video(frames, paths[video_format], video_format, 12.0)
    return paths


def node_types(workflow: dict) -> list[str]:
    return [node["type"] for node in workflow["nodes"]]


def widget_values(workflow: dict) -> dict:
    return {node["id"]: node.get("widgets_values") for node in workflow["nodes"]}


def output_path(comfy, entry: dict) -> Path:
    return comfy.output_dir / entry.get("subfolder", "") / entry["filename"]


def saved_files(history_entry: dict, node_id) -> list[dict]:
    return history_entry["outputs"][str(node_id)]["images"]


def load_to_save_graph(editor) -> tuple[int, int]:
    """T2VLoadVideo -> T2VSaveVideo (images and fps), both added through the node search."""
    editor.evaluate("() => app.graph.clear()")
    load = editor.add_node_by_search("Load Video Text2Video", "Load Video (Text2Video)", (60, 80))
    save = editor.add_node_by_search("Save Video Text2Video", "Save Video (Text2Video)", (420, 80))
    editor.evaluate("""([load, save]) => {
      const source = app.graph.getNodeById(load), target = app.graph.getNodeById(save);
      source.connect(0, target, 0); source.connect(1, target, 1);
    }""", [load, save])
    return load, save


# --------------------------------------------------------------------------- loading the pack


def test_editor_loads_the_pack_and_finds_its_nodes_in_search(editor):
    registered = editor.evaluate("() => Object.keys(LiteGraph.registered_node_types).filter((t) => t.startsWith('T2V'))")
    assert {"T2VModelLoader", "T2VSampler", "T2VLoadVideo", "T2VSaveVideo"} <= set(registered)
    editor.evaluate("() => app.graph.clear()")
    added = editor.add_node_by_search("Text2Video sampler", "Text2Video Sampler")
    assert editor.evaluate("(id) => app.graph.getNodeById(id).type", added) == "T2VSampler"


USER_SETTINGS = {
    "text2video_zero_checkpoint": {1: {"ckpt_name": "t2v-it-sd15.safetensors"}, 2: {"lora_name": "t2v-it-lora.safetensors"},
                                   6: {"width": 64, "height": 64}, 7: {"steps": 4, "t0": 1, "t1": 2}, 10: {"frames": 4}},
    "text2video_zero_controlnet": {1: {"ckpt_name": "t2v-it-sd15.safetensors"}, 2: {"lora_name": "t2v-it-lora.safetensors"},
                                   7: {"steps": 4, "t0": 1, "t1": 2}, 20: {"file": "user-clip.mp4"},
                                   23: {"control_net_name": "t2v-it-controlnet.safetensors"}},
    "video_instruct_pix2pix_checkpoint": {1: {"ckpt_name": "t2v-it-sd15-ip2p.safetensors"}, 10: {"steps": 4},
                                          20: {"file": "user-clip.mp4"}},
}
"""What a user picks in the examples on their own models: the files of `user_files`, a small size, few steps."""


@pytest.fixture(scope="module")
def input_clip(comfy, clips) -> Path:
    """`clip.mp4` in the server's input folder: the clip the video-editing examples load."""
    target = comfy.input_dir / "clip.mp4"
    target.write_bytes(clips["mp4"].read_bytes())
    return target


@pytest.fixture(scope="module")
def user_files(comfy) -> dict[str, str]:
    """A user's models, made small (checkpoints saved by core CheckpointSave, a LoRA, a ControlNet), and a
    6-frame 64x64 clip `user-clip.mp4` in the input folder. Made before the editor opens, so its lists show them."""
    from user_models import make_model_files, save_checkpoints

    frames = torch.rand(6, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    video_io.write_video(frames, comfy.input_dir / "user-clip.mp4", "mp4", 8.0)
    make_model_files(comfy)
    return save_checkpoints(comfy)


def run_and_restore(editor, comfy, workflow: dict) -> None:
    """Run from the Run button; the save node shows the written file, and the file dropped back restores the
    workflow's widget values."""
    entry = editor.run()
    [save_id] = editor.node_ids("T2VSaveVideo")
    [saved] = saved_files(entry, save_id)
    state = editor.wait_for_preview(save_id, saved["filename"])
    assert state["tag"] == ELEMENT_OF_FORMAT[Path(saved["filename"]).suffix[1:]]
    editor.screenshot("ran")
    editor.drop_workflow(output_path(comfy, saved), node_types(workflow))
    assert widget_values(editor.graph()) == widget_values(workflow)


@pytest.mark.parametrize("example", RUNNABLE, ids=[path.stem for path in RUNNABLE])
def test_each_example_loads_by_drop_runs_and_its_video_restores_it(editor, comfy, input_clip, example):
    workflow = json.loads(example.read_text())
    editor.drop_workflow(example, node_types(workflow))
    assert editor.missing_node_types() == []
    assert widget_values(editor.graph()) == widget_values(workflow)
    run_and_restore(editor, comfy, workflow)


@pytest.mark.parametrize("name", sorted(ON_USER_CHECKPOINTS))
def test_each_example_on_user_checkpoints_loads_by_drop_runs_with_their_files_and_restores(editor, comfy,
                                                                                           user_files, name):
    example = REPO / "example_workflows" / f"{name}.json"
    workflow = json.loads(example.read_text())
    editor.drop_workflow(example, node_types(workflow))
    assert editor.missing_node_types() == []
    assert widget_values(editor.graph()) == widget_values(workflow)
    for node_id, values in USER_SETTINGS[name].items():
        for widget, value in values.items():
            editor.set_widget(node_id, widget, value)
    run_and_restore(editor, comfy, editor.graph())


# --------------------------------------------------------------------------- the save node's previews


def test_save_node_shows_every_format_also_after_switching_and_each_file_restores_the_workflow(editor, comfy, clips):
    load, save = load_to_save_graph(editor)
    _accept, name = editor.upload_with_button(load, clips["mp4"])
    editor.wait_for_preview(load, name)
    editor.set_widget(load, "select_every_nth", 2)  # 12 frames at 6 fps
    workflow = editor.graph()
    heights = {}
    for video_format in FORMATS_IN_A_ROW:
        editor.set_widget(save, "format", video_format)
        workflow = editor.graph()
        entry = editor.run()
        files = saved_files(entry, save)
        state = editor.wait_for_preview(save, files[0]["filename"])
        editor.screenshot(f"format-{video_format}")
        assert state["previewWidgets"] == ["t2v_result"], "one preview, never two stacked"
        assert state["tag"] == ELEMENT_OF_FORMAT[video_format]
        assert state["mediaSize"] == [64, 48]
        assert state["scrubber"] is (video_format == "png")
        shown = f"{files[0]['subfolder']}/" if video_format == "png" else files[0]["filename"]
        assert state["caption"] == f"12 frames · 64x48 · 6 fps · {shown}"
        heights.setdefault(video_format == "png", set()).add(state["nodeSize"][1])
        if video_format == "gif":
            continue  # gif files carry no workflow
        editor.drop_workflow(output_path(comfy, files[0]), node_types(workflow))
        assert widget_values(editor.graph()) == widget_values(workflow)
        editor.evaluate("(graph) => app.loadGraphData(graph)", workflow)  # back to the graph that was run
        editor.page.wait_for_timeout(300)
    assert all(len(sizes) == 1 for sizes in heights.values()), f"the node changed its height: {heights}"


def test_a_png_strip_scrubs_through_the_frames(editor, comfy, clips):
    load, save = load_to_save_graph(editor)
    editor.upload_with_button(load, clips["webm"])
    editor.set_widget(save, "format", "png")
    editor.run()
    editor.wait_for_preview(save, "frame_00000.png")
    editor.evaluate("""(id) => {
      const slider = app.graph.getNodeById(id).widgets.find((w) => w.name === 't2v_result')
        .element.querySelector('input[type=range]');
      slider.value = '5';
      slider.dispatchEvent(new Event('input'));
    }""", save)
    state = editor.wait_for_preview(save, "frame_00005.png")
    assert state["loaded"]


# --------------------------------------------------------------------------- the load node


@pytest.mark.parametrize("video_format, element", [("mp4", "video"), ("webm", "video"), ("gif", "img"),
                                                   ("webp", "img")])
def test_upload_previews_the_clip_and_what_the_selection_keeps(editor, clips, video_format, element):
    load, _save = load_to_save_graph(editor)
    accept, name = editor.upload_with_button(load, clips[video_format])
    assert all(kind in accept for kind in ("video/*", "image/gif", "image/webp", ".mov", ".mkv"))
    state = editor.wait_for_preview(load, name)
    assert state["tag"] == element and state["mediaSize"] == [64, 48]
    assert state["caption"].startswith("keeps 24 of 24 frames (1-24) · 12 fps · 64x48")
    for name, value in (("skip_first", 2), ("select_every_nth", 3), ("frame_limit", 5), ("width", 32)):
        editor.set_widget(load, name, value)
    editor.page.wait_for_function(
        "(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 't2v_clip').element.textContent"
        ".includes('keeps 5 of 24 frames (3-15, every 3) · 4 fps · 64x48 -> 32x24')", arg=load, timeout=10_000)
    editor.screenshot("selection")


def test_an_editor_saved_load_video_workflow_runs_headless_with_the_same_frames(editor, comfy, clips, tmp_path):
    load, save = load_to_save_graph(editor)
    _accept, uploaded = editor.upload_with_button(load, clips["webp"])
    for name, value in (("skip_first", 1), ("select_every_nth", 2), ("frame_limit", 6), ("width", 40),
                        ("height", 32)):
        editor.set_widget(load, name, value)
    editor.set_widget(save, "format", "png")
    saved = editor.save_workflow("load-video-headless")
    [load_node] = [node for node in saved["nodes"] if node["type"] == "T2VLoadVideo"]
    assert load_node["widgets_values"] == [uploaded, 6, 1, 2, 40, 32, "image"]
    entry = editor.run()
    in_editor = sorted(output_path(comfy, file) for file in saved_files(entry, save))
    workflow = tmp_path / "saved.json"
    workflow.write_text(json.dumps(saved))
    result = subprocess.run([sys.executable, "-m", "comfyui_text2video", "run", str(workflow), "--input-dir",
                             str(comfy.input_dir), "--output-dir", str(tmp_path / "out"), "--device", "cpu"],
                            capture_output=True, text=True, cwd=REPO.parent, timeout=300)
    assert result.returncode == 0, result.stderr
    [output] = json.loads(result.stdout)["outputs"]
    headless = sorted(Path(file) for file in output["files"])
    assert len(headless) == len(in_editor) == 6
    for ours, theirs in zip(headless, in_editor):
        assert torch.equal(video_io.read_frames(ours).frames, video_io.read_frames(theirs).frames)


# --------------------------------------------------------------------------- without the extension, templates


def test_the_nodes_work_when_the_extension_fails_to_load(comfy, browser, artifacts, clips):
    from editor import Editor

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.route("**/extensions/ComfyUI-Text2Video/**", lambda route: route.abort())
    page = context.new_page()
    editor = Editor(page, comfy, artifacts, "without-extension")
    try:
        page.goto(editor.url, wait_until="domcontentloaded")
        page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=180_000)
        assert not page.evaluate("() => (app.extensions || []).some((e) => e.name === 'Text2Video.Editor')")
        comfy.upload(clips["mp4"])
        load, save = load_to_save_graph(editor)
        editor.set_widget(load, "video", "clip.mp4")
        entry = editor.run()
        [saved] = saved_files(entry, save)
        assert output_path(comfy, saved).is_file()
        page.wait_for_function("(id) => (app.graph.getNodeById(id).widgets || []).some((w) => w.name === "
                               "'video-preview')", arg=save, timeout=20_000)  # the editor's own preview
        editor.screenshot("core-preview")
    finally:
        context.close()


def test_template_browser_lists_the_demo_first_with_thumbnails(editor, comfy):
    templates = comfy.get("/workflow_templates")["ComfyUI-Text2Video"]
    assert sorted(templates) == sorted(path.stem for path in EXAMPLES)
    editor.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    editor.page.get_by_text("ComfyUI-Text2Video", exact=True).first.click()
    cards = editor.page.locator("[data-testid^='template-workflow-']")
    cards.first.wait_for(timeout=20_000)
    seen: list[str] = []
    while True:  # the browser renders further cards, and loads a card's thumbnail, as the cards scroll into view
        fresh = [test_id for test_id in (card.get_attribute("data-testid") for card in cards.all())
                 if test_id not in seen]
        if not fresh:
            break
        for test_id in fresh:
            card = editor.page.locator(f"[data-testid='{test_id}']")
            card.scroll_into_view_if_needed()
            card.locator("img").first.wait_for(timeout=20_000)
            editor.page.wait_for_function("(card) => [...card.querySelectorAll('img')].some((img) => img.complete "
                                          "&& img.naturalWidth > 0)", arg=card.element_handle(), timeout=20_000)
            seen.append(test_id)
        editor.page.locator(f"[data-testid='{seen[-1]}']").hover()  # the grid shows 12 cards and loads more when
        editor.page.mouse.wheel(0, 4000)  # scrolled to its end
        editor.page.wait_for_timeout(1000)
    names = [test_id.removeprefix("template-workflow-") for test_id in seen]
    assert names[0] == "text2video" and sorted(names) == sorted(templates)
    editor.screenshot("templates")
