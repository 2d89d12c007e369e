"""T2VLoadVideo / T2VSaveVideo: the contract, node-named errors, and the ComfyUI-facing results."""

from __future__ import annotations

import json

import av
import pytest
import torch
from PIL import Image

from comfyui_text2video import bridge, nodes
from comfyui_text2video.media import video_io
from comfyui_text2video.errors import NodeInputError
from comfyui_text2video.nodes.video import T2VLoadVideo, T2VSaveVideo, video_info

from test_video_io import frame_indices, numbered_frames

PROMPT = {"5": {"class_type": "T2VSaveVideo", "inputs": {"fps": 8.0}}}
WORKFLOW = {"nodes": [{"id": 5, "type": "T2VSaveVideo"}], "links": []}


@pytest.fixture
def folders(tmp_path):
    """Private input and output folders for the nodes; restored afterwards."""
    input_dir, output_dir = tmp_path / "input", tmp_path / "output"
    input_dir.mkdir()
    output_dir.mkdir()
    bridge.set_folders(input=input_dir, output=output_dir)
    yield input_dir, output_dir
    bridge.reset_folders()


def save(images, video_format="mp4", fps=8.0, prefix="Text2Video/video", **extra):
    return T2VSaveVideo().save(images, fps, prefix, video_format, **extra)


def test_nodes_are_registered_with_display_names():
    assert nodes.NODE_CLASS_MAPPINGS["T2VLoadVideo"] is T2VLoadVideo
    assert nodes.NODE_CLASS_MAPPINGS["T2VSaveVideo"] is T2VSaveVideo
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["T2VLoadVideo"] == "Load Video (Text2Video)"
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["T2VSaveVideo"] == "Save Video (Text2Video)"


@pytest.mark.parametrize("node, required, optional", [
    (T2VLoadVideo, ["video", "frame_limit", "skip_first", "select_every_nth"], ["width", "height"]),
    (T2VSaveVideo, ["images", "fps", "filename_prefix", "format"], ["quality"]),
])
def test_inputs_follow_the_contract_and_explain_themselves(folders, node, required, optional):
    inputs = node.INPUT_TYPES()
    assert list(inputs["required"]) == required
    assert list(inputs.get("optional", {})) == optional
    for name, (_type, options) in {**inputs["required"], **inputs["optional"]}.items():
        assert options.get("tooltip"), name
    assert node.CATEGORY == "Text2Video/video"
    assert node.DESCRIPTION


def test_save_node_is_an_output_node_with_the_workflow_hidden_inputs():
    inputs = T2VSaveVideo.INPUT_TYPES()
    assert T2VSaveVideo.OUTPUT_NODE is True
    assert inputs["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert inputs["required"]["format"][0] == ["mp4", "webm", "gif", "webp", "png"]
    assert inputs["optional"]["quality"][1].items() >= {"default": 85, "min": 1, "max": 100}.items()


def test_load_node_lists_the_input_folder_with_an_upload_button(folders):
    input_dir, _ = folders
    (input_dir / "clips").mkdir()
    (input_dir / "clips" / "b.webm").write_bytes(b"x")
    (input_dir / "a.mp4").write_bytes(b"x")
    choices, options = T2VLoadVideo.INPUT_TYPES()["required"]["video"]
    assert choices == ["a.mp4", "clips/b.webm"]
    assert options["video_upload"] is True


# --------------------------------------------------------------------------- save


def test_save_returns_what_the_editor_previews(folders):
    _, output_dir = folders
    result = save(numbered_frames(4), "mp4", fps=12.5)
    assert result == {"ui": {"images": [{"filename": "video_00001.mp4", "subfolder": "Text2Video",
                                         "type": "output"}], "animated": (True,),
                             "t2v_video": [{"format": "mp4", "frames": 4, "width": 40, "height": 24, "fps": 12.5}]},
                      "result": ()}
    assert (output_dir / "Text2Video" / "video_00001.mp4").is_file()


@pytest.mark.parametrize("video_format, animated", [("mp4", True), ("webm", True), ("webp", True), ("gif", False),
                                                    ("png", False)])
def test_only_single_file_animations_are_reported_animated(folders, video_format, animated):
    """The editor plays `animated` results in a video element (an image for webp): a gif there shows nothing."""
    assert ("animated" in save(numbered_frames(2), video_format)["ui"]) is animated


def test_format_defaults_to_mp4():
    assert T2VSaveVideo.INPUT_TYPES()["required"]["format"][1]["default"] == "mp4"


def test_png_save_returns_the_frames_of_its_folder(folders):
    _, output_dir = folders
    result = save(numbered_frames(3), "png", prefix="shots/take")
    assert "animated" not in result["ui"]
    assert result["ui"]["images"] == [{"filename": f"frame_{index:05d}.png", "subfolder": "shots/take_00001",
                                       "type": "output"} for index in range(3)]
    assert sorted(path.name for path in (output_dir / "shots" / "take_00001").iterdir()) == [
        "frame_00000.png", "frame_00001.png", "frame_00002.png"]


def test_save_embeds_the_prompt_and_workflow(folders):
    _, output_dir = folders
    save(numbered_frames(2), "mp4", prompt=PROMPT, extra_pnginfo={"workflow": WORKFLOW})
    with av.open(str(output_dir / "Text2Video" / "video_00001.mp4")) as container:
        assert json.loads(container.metadata["prompt"]) == PROMPT
        assert json.loads(container.metadata["workflow"]) == WORKFLOW
    save(numbered_frames(2), "webp", prompt=PROMPT, extra_pnginfo={"workflow": WORKFLOW})
    with Image.open(output_dir / "Text2Video" / "video_00002.webp") as image:
        assert image.getexif()[0x010F] == f"workflow:{json.dumps(WORKFLOW)}"


def test_save_honours_disabled_metadata(folders, monkeypatch):
    _, output_dir = folders
    monkeypatch.setattr(bridge, "metadata_enabled", lambda: False)
    save(numbered_frames(2), "mp4", prompt=PROMPT, extra_pnginfo={"workflow": WORKFLOW})
    with av.open(str(output_dir / "Text2Video" / "video_00001.mp4")) as container:
        assert "workflow" not in container.metadata and "prompt" not in container.metadata


@pytest.mark.parametrize("images, fps, prefix, video_format, input_name", [
    (torch.zeros(0, 8, 8, 3), 8.0, "video", "mp4", "images"),
    (torch.zeros(2, 8, 8, 4), 8.0, "video", "mp4", "images"),
    (torch.zeros(2, 8, 8, 3), 0.0, "video", "mp4", "fps"),
    (torch.zeros(2, 8, 8, 3), 8.0, "../video", "mp4", "filename_prefix"),
    (torch.zeros(2, 8, 8, 3), 8.0, "/etc/video", "gif", "filename_prefix"),
    (torch.zeros(2, 8, 8, 3), 8.0, "video", "avi", "format"),
])
def test_save_errors_name_the_node_and_input_and_write_nothing(folders, tmp_path, images, fps, prefix,
                                                               video_format, input_name):
    with pytest.raises(NodeInputError) as refused:
        save(images, video_format, fps=fps, prefix=prefix)
    assert (refused.value.node, refused.value.input_name) == ("T2VSaveVideo", input_name)
    assert str(refused.value).startswith(f"T2VSaveVideo: input '{input_name}'")
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["input", "output"]


def interrupt_at_check(monkeypatch, number: int) -> list[int]:
    """Make the `number`-th interrupt check raise, as Ctrl-C or ComfyUI's cancel button would."""
    checks = []

    def check_interrupt():
        checks.append(len(checks) + 1)
        if len(checks) == number:
            raise KeyboardInterrupt("interrupted")

    monkeypatch.setattr(bridge, "check_interrupt", check_interrupt)
    return checks


@pytest.mark.parametrize("video_format", ["mp4", "png"])
def test_a_save_interrupted_mid_way_leaves_no_file(folders, monkeypatch, video_format):
    _, output_dir = folders
    checks = interrupt_at_check(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        save(numbered_frames(6), video_format)
    assert checks == [1, 2, 3]  # stopped between frames, not before the first
    assert [path for path in output_dir.rglob("*") if path.is_file()] == []


# --------------------------------------------------------------------------- load


@pytest.fixture
def clip(folders):
    """A 12-frame numbered mp4 at 12 fps in the input folder, saved by the save node."""
    input_dir, output_dir = folders
    save(numbered_frames(12, 24, 40), "mp4", fps=12.0, prefix="clip")
    (output_dir / "clip_00001.mp4").rename(input_dir / "clip.mp4")
    return input_dir / "clip.mp4"


def test_load_returns_float_frames_fps_and_count(clip):
    images, fps, count = T2VLoadVideo().load("clip.mp4", frame_limit=0, skip_first=0, select_every_nth=1)
    assert images.dtype == torch.float32 and images.device == bridge.intermediate_device()
    assert tuple(images.shape) == (12, 24, 40, 3) and count == 12
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert fps == pytest.approx(12.0)
    assert frame_indices(images * 255) == list(range(12))


def test_load_selects_and_resizes(clip):
    images, fps, count = T2VLoadVideo().load("clip.mp4", frame_limit=2, skip_first=1, select_every_nth=3,
                                             width=20)
    assert frame_indices(images * 255) == [1, 4]
    assert (tuple(images.shape), count, fps) == ((2, 12, 20, 3), 2, pytest.approx(4.0))


@pytest.mark.parametrize("video, selection, input_name, problem", [
    ("missing.mp4", {}, "video", "not found"),
    ("../outside.mp4", {}, "video", "outside the input folder"),
    ("clip.mp4", {"skip_first": 12}, "skip_first", "none of the 12 frames"),
    ("clip.mp4", {"width": 4}, "width", "at least 8"),
    ("empty.mp4", {}, "video", "empty file"),
    ("corrupt.mp4", {}, "video", "cannot be decoded"),
])
def test_load_errors_name_the_node_and_input(clip, video, selection, input_name, problem):
    (clip.parent / "empty.mp4").touch()
    (clip.parent / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (clip.parent.parent / "outside.mp4").write_bytes(clip.read_bytes())
    arguments = {"frame_limit": 0, "skip_first": 0, "select_every_nth": 1} | selection
    with pytest.raises(NodeInputError, match=problem) as refused:
        T2VLoadVideo().load(video, **arguments)
    assert (refused.value.node, refused.value.input_name) == ("T2VLoadVideo", input_name)


def test_validate_inputs_confines_the_video_to_the_input_folder(clip):
    outside = clip.parent.parent / "outside.mp4"
    outside.write_bytes(clip.read_bytes())
    assert T2VLoadVideo.VALIDATE_INPUTS("clip.mp4") is True
    assert T2VLoadVideo.VALIDATE_INPUTS(str(clip)) is True
    for escape in ("../outside.mp4", str(outside)):
        message = T2VLoadVideo.VALIDATE_INPUTS(escape)
        assert isinstance(message, str)
        assert message.startswith("T2VLoadVideo: input 'video'") and "outside the input folder" in message
    assert "not found" in T2VLoadVideo.VALIDATE_INPUTS("absent.mp4")


def test_a_load_can_be_interrupted_between_frames(clip, monkeypatch):
    checks = interrupt_at_check(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        T2VLoadVideo().load("clip.mp4", frame_limit=0, skip_first=0, select_every_nth=1)
    assert checks == [1, 2]


def test_is_changed_follows_the_file_content(clip):
    before = T2VLoadVideo.IS_CHANGED("clip.mp4", frame_limit=0, skip_first=0, select_every_nth=1)
    assert before == video_io.content_fingerprint(clip)  # this file's fingerprint, not an error message
    assert T2VLoadVideo.IS_CHANGED(video="clip.mp4") == before
    clip.write_bytes(clip.read_bytes() + b"\0")
    assert T2VLoadVideo.IS_CHANGED(video="clip.mp4") != before


def test_saved_output_loads_back_through_the_nodes(folders):
    input_dir, output_dir = folders
    result = save(numbered_frames(5), "png", prefix="frames")
    (output_dir / result["ui"]["images"][0]["subfolder"]).rename(input_dir / "frames")
    assert "frames" in T2VLoadVideo.INPUT_TYPES()["required"]["video"][0]
    images, fps, count = T2VLoadVideo().load("frames", frame_limit=0, skip_first=0, select_every_nth=1)
    assert torch.equal(images, numbered_frames(5).mul(255).round().div(255))
    assert (count, fps) == (5, 8.0)


def test_api_workflows_embed_the_prompt_but_no_empty_workflow():
    from comfyui_text2video.nodes.video import workflow_metadata

    metadata = workflow_metadata({"1": {"class_type": "T2VSaveVideo", "inputs": {}}}, {"workflow": None})
    assert set(metadata) == {"prompt"}
    assert set(workflow_metadata(None, {"workflow": {"nodes": []}})) == {"workflow"}


class EncoderFailure(RuntimeError):
    pass


@pytest.mark.parametrize("video_format", ["mp4", "webm", "gif", "webp", "png"])
def test_a_save_failing_while_encoding_never_shows_a_video_under_its_name(folders, monkeypatch, video_format):
    """Until a save is complete its final name is only an empty placeholder: a crash while encoding (a killed process,
    a power cut) cannot leave a truncated video there, and after a failure nothing is left at all."""
    _, output_dir = folders
    final = output_dir / "Text2Video" / ("video_00001" + ("" if video_format == "png" else f".{video_format}"))
    under_final_name = []

    def look():
        if final.is_dir():
            under_final_name.append(sorted(path.name for path in final.iterdir()))
        elif final.exists():
            under_final_name.append(final.stat().st_size)

    def write_then_fail(*args, **kwargs):
        write_video(*args, **kwargs)  # every frame encoded and written out
        look()
        raise EncoderFailure("the encoder crashed while finishing the file")

    write_video = video_io.write_video
    monkeypatch.setattr(video_io, "write_video", write_then_fail)
    monkeypatch.setattr(bridge, "check_interrupt", look)  # between frames
    with pytest.raises(EncoderFailure):
        save(numbered_frames(6), video_format)
    assert under_final_name and set(map(str, under_final_name)) == {"[]" if video_format == "png" else "0"}
    assert [path for path in output_dir.rglob("*") if path.is_file()] == []
    assert not final.exists()


# --------------------------------------------------------------------------- the editor's clip preview


@pytest.mark.parametrize("video_format, kind", [("mp4", "video"), ("webm", "video"), ("gif", "image"),
                                                ("webp", "image"), ("png", "folder")])
def test_video_info_tells_the_editor_frames_fps_size_and_what_to_show(folders, video_format, kind):
    input_dir, output_dir = folders
    save(numbered_frames(6, 24, 40), video_format, fps=12.0, prefix="clip")
    name = "clip_00001" + ("" if video_format == "png" else f".{video_format}")
    (output_dir / name).rename(input_dir / name)
    status, info = video_info({"video": name})
    assert status == 200
    assert info | {"fps": round(info["fps"])} == {"frames": 6, "fps": 8 if kind == "folder" else 12, "width": 40,
                                                  "height": 24, "kind": kind,
                                                  "preview": f"{name}/frame_00000.png" if kind == "folder" else name}


def test_video_info_refuses_what_the_node_refuses(folders):
    status, info = video_info({"video": "../secret.mp4"})
    assert status == 400 and "T2VLoadVideo: input 'video':" in info["error"] and "outside the input folder" in info["error"]
    assert video_info({})[0] == 400


# --------------------------------------------------------------------------- core VIDEO


class CoreVideo:
    """Stands in for ComfyUI's VIDEO (comfy_api VideoInput): what `get_components()` returns."""

    def __init__(self, images, frame_rate):
        self.images, self.frame_rate = images, frame_rate

    def get_components(self):
        from types import SimpleNamespace

        return SimpleNamespace(images=self.images, audio=None, frame_rate=self.frame_rate)


def test_a_core_video_saves_at_its_own_frame_rate(folders):
    from fractions import Fraction

    _, output_dir = folders
    frames = numbered_frames(5)
    result = save(CoreVideo(frames, Fraction(25, 2)), "webm", fps=8.0)
    assert result["ui"]["t2v_video"] == [{"format": "webm", "frames": 5, "width": 40, "height": 24, "fps": 12.5}]
    loaded = video_io.read_frames(output_dir / "Text2Video" / "video_00001.webm")
    assert loaded.fps == 12.5 and loaded.frames.shape[0] == 5


def test_frame_inputs_take_a_core_video_or_image_frames():
    for node in (nodes.NODE_CLASS_MAPPINGS["T2VVideoToVideo"], nodes.NODE_CLASS_MAPPINGS["T2VVAEEncode"], T2VSaveVideo):
        assert node.INPUT_TYPES()["required"]["images"][0] == "IMAGE,VIDEO"
