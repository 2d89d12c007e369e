"""Long videos: T2VContextWindows, a patch node that makes every model call run on windows of frames."""

from __future__ import annotations

from ..errors import NodeInputError
from ..samplers.context_windows import FUSE_METHODS, SCHEDULES, ContextOptions
from .common import MAX_FRAMES

CONTEXT_WINDOWS = "T2VContextWindows"


class T2VContextWindows:
    DESCRIPTION = ("Long videos on a text-to-video model: every model call runs on windows of context_length frames "
                   "that overlap by context_overlap, and the overlapping predictions are blended. Memory then grows "
                   "with the window, not the video, and each window stays near the length the model was trained on. "
                   "Same options as AnimateDiff-Evolved's and core ComfyUI's context windows. A video no longer "
                   "than one window gives exactly the unpatched result. Returns a patched copy of the model.")
    CATEGORY = "Text2Video/long video"
    RETURN_TYPES = ("T2V_MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("T2V_MODEL", {"tooltip": "The model whose sampling should run in windows of frames."}),
                "context_length": ("INT", {"default": 16, "min": 1, "max": MAX_FRAMES,
                                           "tooltip": "Frames per window: what the model sees at once (ModelScope "
                                                      "and zeroscope were trained on 16-24)."}),
                "context_overlap": ("INT", {"default": 4, "min": 0, "max": MAX_FRAMES,
                                            "tooltip": "Frames shared by neighbouring windows (below context_length); "
                                                       "more overlap blends more smoothly but costs more calls."}),
                "context_schedule": (list(SCHEDULES), {
                    "default": "standard_static",
                    "tooltip": "standard_static: the same windows at every step; standard_uniform: windows shift "
                               "every step so seams never stay put; looped_uniform: like standard_uniform, but "
                               "windows wrap from the end to the start (for looping videos); batched: disjoint "
                               "windows, no overlap (fastest, visible seams)."}),
                "fuse_method": (list(FUSE_METHODS), {
                    "default": "pyramid",
                    "tooltip": "How overlapping predictions are blended: pyramid weighs a window's middle frames "
                               "most; flat averages equally; overlap-linear cross-fades linearly over the overlap."}),
            },
            "optional": {
                "context_stride": ("INT", {"default": 1, "min": 1, "max": 16,
                                           "tooltip": "Uniform schedules only: above 1 adds windows of every 2nd, "
                                                      "4th, ... frame, which tie distant frames together."}),
                "closed_loop": ("BOOLEAN", {"default": False,
                                            "tooltip": "looped_uniform only: also blend the last frames into the "
                                                       "first ones so the video loops seamlessly."}),
            },
        }

    def patch(self, model, context_length, context_overlap, context_schedule, fuse_method, context_stride=1,
              closed_loop=False):
        options = ContextOptions(context_length, context_overlap, context_schedule, fuse_method, context_stride,
                                 closed_loop)
        if not model.family.video_unet:
            raise NodeInputError(CONTEXT_WINDOWS, "model", f"'{model.name}' is a {model.family.description} image "
                                 "model; context windows are for text-to-video (3D UNet) models. Text2Video-Zero "
                                 "keeps memory flat with its chunk_size input instead")
        if not model.family.context_windows:
            raise NodeInputError(CONTEXT_WINDOWS, "model", f"'{model.name}' is a {model.family.description} model; "
                                 "context windows do not run it (sample its frames in one piece)")
        problem = options.problem()
        if problem:
            raise NodeInputError(CONTEXT_WINDOWS, *problem)
        return (model.with_context_windows(options),)


NODE_CLASS_MAPPINGS = {CONTEXT_WINDOWS: T2VContextWindows}
NODE_DISPLAY_NAME_MAPPINGS = {CONTEXT_WINDOWS: "Text2Video Context Windows (long videos)"}
