"""T2VLoadVideo / T2VSaveVideo: video files from the input folder, videos into the output folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .. import bridge
from ..media import video_io
from ..errors import NodeInputError
from .common import MAX_RESOLUTION, StepProgress, check_widget_values, validation_verdict
from .vae import IMAGES_OR_VIDEO

LOAD_NODE = "T2VLoadVideo"
SAVE_NODE = "T2VSaveVideo"
CATEGORY = "Text2Video/video"
MAX_FRAME_INDEX = 1_000_000

ANIMATED_FORMATS = ("mp4", "webm", "webp")
"""Results the editor shows as one animated file (`animated` in the node's ui): mp4/webm in a video
element, webp in an image. gif must not be among them: the editor would try to play it as a video."""
PREVIEW_INFO_KEY = "t2v_video"
"""The ui entry with what the pack's editor extension captions a result with (frames, size, fps)."""

_LOAD_INPUT_OF = {"path": "video"}
_SAVE_INPUT_OF = {"frames": "images"}


def _node_error(node: str, input_of: dict[str, str], error: video_io.VideoIOError) -> NodeInputError:
    """The node-level error for a `video_io` error, naming the node's input instead of the argument."""
    return NodeInputError(node, input_of.get(error.argument, error.argument), error.problem)


def _input_video(video: str):
    try:
        return video_io.resolve_input_video(bridge.input_directory(), video)
    except video_io.VideoIOError as error:
        raise _node_error(LOAD_NODE, _LOAD_INPUT_OF, error) from error


def _stop_if_interrupted(_frames_kept: int) -> None:
    bridge.check_interrupt()


class T2VLoadVideo:
    DESCRIPTION = ("Loads a video (mp4, webm, mov, mkv, gif, webp) or a folder of numbered images from the input "
                   "folder as IMAGE frames, decoding frame by frame and keeping only the selected frames.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "FLOAT", "INT")
    RETURN_NAMES = ("images", "fps", "frame_count")
    OUTPUT_TOOLTIPS = ("The selected frames.",
                       "Frame rate of the selected frames (the source's divided by select_every_nth).",
                       "How many frames were loaded.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        size_tooltip = ("Resize the frames to this {} in pixels (0 = keep; if only one side is set, the other "
                        "keeps the aspect ratio).")
        return {
            "required": {
                "video": (video_io.list_input_videos(bridge.input_directory()), {
                    "video_upload": True,
                    "tooltip": "A video file or a folder of numbered images in ComfyUI's input folder "
                               f"(an image folder plays at {video_io.DEFAULT_FPS:g} fps)."}),
                "frame_limit": ("INT", {"default": 0, "min": 0, "max": MAX_FRAME_INDEX,
                                        "tooltip": "Load at most this many frames (0 = all); decoding stops there."}),
                "skip_first": ("INT", {"default": 0, "min": 0, "max": MAX_FRAME_INDEX,
                                       "tooltip": "Frames to skip at the start, before select_every_nth applies."}),
                "select_every_nth": ("INT", {"default": 1, "min": 1, "max": 1_000,
                                             "tooltip": "Keep every n-th frame after skip_first (1 = every frame); "
                                                        "the fps output is divided by it."}),
            },
            "optional": {
                "width": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION,
                                  "tooltip": size_tooltip.format("width")}),
                "height": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION,
                                   "tooltip": size_tooltip.format("height")}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, video=None):
        """The chosen file is there and inside the input folder (None: it comes from a link)."""
        if video is None:
            return True
        if not isinstance(video, str):
            return str(NodeInputError(LOAD_NODE, "video", f"{video!r} is not a file name; choose a video"))
        try:
            _input_video(video)
        except NodeInputError as error:
            return str(error)
        return True

    @classmethod
    def IS_CHANGED(cls, video, **_other_inputs):
        try:
            return video_io.content_fingerprint(_input_video(video))
        except NodeInputError as error:
            return str(error)

    def load(self, video, frame_limit, skip_first, select_every_nth, width=0, height=0):
        path = _input_video(video)
        try:
            loaded = video_io.read_frames(path, skip_first=skip_first, select_every_nth=select_every_nth,
                                          frame_limit=frame_limit, width=width, height=height,
                                          on_frame=_stop_if_interrupted)
        except video_io.VideoIOError as error:
            raise _node_error(LOAD_NODE, _LOAD_INPUT_OF, error) from error
        images = loaded.frames.to(bridge.intermediate_device(), torch.float32).div_(255)
        return (images, loaded.fps, images.shape[0])


def workflow_metadata(prompt, extra_pnginfo) -> dict[str, str]:
    """The entries ComfyUI embeds in outputs: `prompt` and each `extra_pnginfo` key (the workflow), as JSON."""
    metadata = {"prompt": json.dumps(prompt)} if prompt is not None else {}
    metadata.update({key: json.dumps(value) for key, value in (extra_pnginfo or {}).items() if value is not None})
    return metadata


def _check_save_inputs(fps, filename_prefix) -> None:
    check_widget_values(T2VSaveVideo, fps=fps)
    if filename_prefix is not None:
        try:
            video_io.check_output_prefix(bridge.output_directory(), filename_prefix)
        except video_io.VideoIOError as error:
            raise _node_error(SAVE_NODE, _SAVE_INPUT_OF, error) from error


class T2VSaveVideo:
    DESCRIPTION = ("Saves frames as a video (mp4, webm, gif, webp) or a folder of lossless numbered PNGs in the "
                   "output folder, with the workflow embedded (except gif). Never overwrites: each save gets the "
                   "next number.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": (IMAGES_OR_VIDEO, {"tooltip": "The frames to save, in order: IMAGE frames, or a core "
                                                        "VIDEO (saved at its own frame rate)."}),
                "fps": ("FLOAT", {"default": 8.0, "min": 0.01, "max": 1000.0, "step": 0.01,
                                  "tooltip": "Frames per second of IMAGE frames (connect T2VLoadVideo's fps to keep "
                                             "a source's); a VIDEO keeps its own."}),
                "filename_prefix": ("STRING", {"default": "Text2Video/video",
                                               "tooltip": "File name inside the output folder; may start with "
                                                          "subfolders. A number is appended (_00001)."}),
                "format": (list(video_io.SAVE_FORMATS), {
                    "default": "mp4",
                    "tooltip": "mp4 = H.264 (odd sizes padded by one pixel), webm = VP9, gif, webp = animated "
                               "WebP, png = a folder of lossless numbered frames."}),
            },
            "optional": {
                "quality": ("INT", {"default": 85, "min": 1, "max": 100,
                                    "tooltip": "Higher is better and larger: sets the crf for mp4/webm, the "
                                               "colours for gif, the quality for webp (100 = lossless); png is "
                                               "always lossless."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, fps=None, filename_prefix=None):
        """Refuse what would fail only after the whole run: a prefix that cannot be saved (see
        `video_io.check_output_prefix`) or an fps that is no number (None: it comes from a link)."""
        return validation_verdict(lambda: _check_save_inputs(fps, filename_prefix))

    def save(self, images, fps, filename_prefix, format, quality=85, prompt=None, extra_pnginfo=None):
        check_widget_values(T2VSaveVideo, fps=fps)
        video = bridge.video_components(images)
        if video is not None:
            images, fps = video
        metadata = workflow_metadata(prompt, extra_pnginfo) if bridge.metadata_enabled() else {}
        try:
            with StepProgress(SAVE_NODE) as progress:
                saved = video_io.save_video(images, bridge.output_directory(), filename_prefix, format, fps,
                                            quality, metadata, on_progress=progress)
        except video_io.VideoIOError as error:
            raise _node_error(SAVE_NODE, _SAVE_INPUT_OF, error) from error
        results = [{"filename": name, "subfolder": saved.subfolder, "type": "output"} for name in saved.filenames]
        ui = {"images": results, PREVIEW_INFO_KEY: [{"format": format, "frames": images.shape[0],
                                                      "width": images.shape[2], "height": images.shape[1],
                                                      "fps": fps}]}
        if format in ANIMATED_FORMATS:
            ui["animated"] = (True,)
        return {"ui": ui, "result": ()}


def video_info(query: dict) -> tuple[int, dict]:
    """`GET /t2v/video_info?video=NAME`: what the editor's T2VLoadVideo preview shows of an input video
    (frames, fps, size, and the input-folder file to show: the video itself or a folder's first image)."""
    try:
        path = _input_video(query.get("video", ""))
        try:
            info = video_io.probe_video(path)
        except video_io.VideoIOError as error:
            raise _node_error(LOAD_NODE, _LOAD_INPUT_OF, error) from error
    except NodeInputError as error:
        return 400, {"error": str(error)}
    kind = "folder" if path.is_dir() else "image" if path.suffix.lower() in video_io.PILLOW_EXTENSIONS else "video"
    shown = os.path.relpath(info.first_image or path, os.path.realpath(bridge.input_directory()))
    return 200, {"frames": info.frames, "fps": info.fps, "width": info.width, "height": info.height, "kind": kind,
                 "preview": Path(shown).as_posix()}


bridge.add_json_route("/t2v/video_info", video_info)

NODE_CLASS_MAPPINGS = {LOAD_NODE: T2VLoadVideo, SAVE_NODE: T2VSaveVideo}
NODE_DISPLAY_NAME_MAPPINGS = {LOAD_NODE: "Load Video (Text2Video)", SAVE_NODE: "Save Video (Text2Video)"}
