"""`run FILE` with a saved video or png: the runner renders the workflow the file carries, refuses others clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from comfyui_text2video import bridge
from comfyui_text2video.headless.cli import EXIT_INVALID, EXIT_OK, main
from comfyui_text2video.headless.workflow import WorkflowError
from comfyui_text2video.headless.workflow_file import read_workflow_file
from comfyui_text2video.media import video_io
from fake_workflow_nodes import UiWorkflow

WORKFLOW = {"nodes": [{"id": 1, "type": "T2VSaveVideo"}], "links": []}
PROMPT = {"1": {"class_type": "T2VSaveVideo", "inputs": {}}}
METADATA = {"prompt": json.dumps(PROMPT), "workflow": json.dumps(WORKFLOW)}


@pytest.fixture(autouse=True)
def restore_bridge():
    yield
    bridge.reset_folders()
    bridge.set_device("auto")


def frames(count: int = 3) -> torch.Tensor:
    return torch.linspace(0, 1, count * 16 * 16 * 3).reshape(count, 16, 16, 3)


@pytest.mark.parametrize("video_format", ["mp4", "webm", "webp"])
def test_a_saved_video_gives_back_its_editor_workflow(tmp_path, video_format):
    path = tmp_path / f"clip.{video_format}"
    video_io.write_video(frames(), path, video_format, 8.0, metadata=METADATA)
    assert read_workflow_file(path) == WORKFLOW


def test_a_file_saved_from_an_api_prompt_gives_back_the_prompt(tmp_path):
    path = tmp_path / "clip.mp4"
    video_io.write_video(frames(), path, "mp4", 8.0, metadata={"prompt": json.dumps(PROMPT), "workflow": "null"})
    assert read_workflow_file(path) == PROMPT


def test_only_the_first_png_frame_carries_the_workflow(tmp_path):
    folder = tmp_path / "take_00001"
    folder.mkdir()
    video_io.write_video(frames(), folder, "png", 8.0, metadata=METADATA)
    assert read_workflow_file(folder / "frame_00000.png") == WORKFLOW
    assert read_workflow_file(folder) == WORKFLOW  # the sequence's folder: its first frame
    with pytest.raises(WorkflowError, match=r"only the first frame, frame_00000.png, carries it"):
        read_workflow_file(folder / "frame_00001.png")


@pytest.mark.parametrize("name, content, message", [
    ("clip.gif", None, "gif files carry no workflow"),
    ("plain.webm", "no metadata", "plain.webm carries no workflow: only files saved with the workflow embedded"),
    ("photo.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)), "neither JSON nor a video or png"),
    ("broken.json", b"{not json", "not valid JSON"),
    ("missing.mp4", "absent", "No such file"),
])
def test_other_files_are_refused_with_the_reason(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        video_io.write_video(frames(), path, "gif", 8.0, metadata=METADATA)
    elif content == "no metadata":
        video_io.write_video(frames(), path, "webm", 8.0)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(WorkflowError, match=message):
        read_workflow_file(path)


def test_run_on_a_saved_video_renders_its_workflow_again(tmp_path, capsys):
    """`run clip.webm` with the clip a run wrote gives a new file with the same frames."""
    ui = UiWorkflow()
    ui.node(1, "T2VModelLoader", ["builtin:tiny-text2video", "float32"], outputs=["T2V_MODEL", "T2V_CLIP", "T2V_VAE"])
    ui.node(2, "T2VTextEncode", ["a red fox"], inputs=[("clip", "T2V_CLIP")], outputs=["CONDITIONING"])
    ui.node(4, "T2VEmptyLatentVideo", [32, 32, 3, 1], outputs=["LATENT"])
    ui.node(5, "T2VSampler", [5, "randomize", 2, 1.0, "ddim", "normal", 1.0],
            inputs=[("model", "T2V_MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                    ("latent", "LATENT")], outputs=["LATENT"])
    ui.node(6, "T2VVAEDecode", [8], inputs=[("vae", "T2V_VAE"), ("latent", "LATENT")], outputs=["IMAGE"])
    ui.node(7, "T2VSaveVideo", [8.0, "again/fox", "webm", 100], inputs=[("images", "IMAGE")])
    for origin, slot, target, name in [(1, 1, 2, "clip"), (1, 0, 5, "model"), (2, 0, 5, "positive"),
                                       (2, 0, 5, "negative"), (4, 0, 5, "latent"), (1, 2, 6, "vae"),
                                       (5, 0, 6, "latent"), (6, 0, 7, "images")]:
        ui.link(origin, slot, target, name)
    workflow = tmp_path / "fox.json"
    workflow.write_text(json.dumps(ui.build()))
    output = tmp_path / "output"
    written = []
    for source in (workflow, None):
        status = main(["run", str(source or written[0]), "--output-dir", str(output), "--device", "cpu"])
        captured = capsys.readouterr()
        assert status == EXIT_OK, captured.err
        written += json.loads(captured.out)["outputs"][0]["files"]
    first, second = map(Path, written)
    assert (first.name, second.name) == ("fox_00001.webm", "fox_00002.webm")
    assert torch.equal(video_io.read_frames(first).frames, video_io.read_frames(second).frames)
    assert read_workflow_file(second) == read_workflow_file(first)


def test_run_refuses_a_gif_with_exit_2(tmp_path, capsys):
    path = tmp_path / "clip.gif"
    video_io.write_video(frames(), path, "gif", 8.0)
    assert main(["run", str(path)]) == EXIT_INVALID
    assert "gif files carry no workflow" in capsys.readouterr().err
