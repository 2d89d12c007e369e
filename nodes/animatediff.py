"""AnimateDiff: load a motion adapter, apply it to a Stable Diffusion model; FreeInit for any video sampling."""

from __future__ import annotations

from ..errors import ModelLoadError, NodeInputError
from ..models.motion_adapter import adapter_problem, animated, available_motion_adapters, load_motion_adapter
from ..samplers.free_init import FILTERS, FreeInitOptions
from .common import check_widget_values, validation_verdict

ADAPTER_LOADER = "T2VMotionAdapterLoader"
APPLY_ADAPTER = "T2VApplyMotionAdapter"
FREE_INIT = "T2VFreeInit"


class T2VMotionAdapterLoader:
    DESCRIPTION = ("Loads an AnimateDiff motion adapter (a diffusers MotionAdapter folder: config.json and weights) "
                   "from models/animatediff_models. builtin:tiny-motion-adapter fits builtin:tiny-sd15 (random "
                   "weights, for trying workflows).")
    CATEGORY = "Text2Video/loaders"
    RETURN_TYPES = ("T2V_MOTION_ADAPTER",)
    RETURN_NAMES = ("motion_adapter",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "adapter_name": (available_motion_adapters(), {
                "tooltip": "A diffusers MotionAdapter folder in models/animatediff_models (by its path there), e.g. "
                           "guoyww/animatediff-motion-adapter-v1-5-2, or a built-in."}),
        }}

    def load(self, adapter_name):
        try:
            return (load_motion_adapter(adapter_name),)
        except ModelLoadError as exc:
            raise NodeInputError(ADAPTER_LOADER, "adapter_name", str(exc)) from exc


class T2VApplyMotionAdapter:
    DESCRIPTION = ("AnimateDiff: turns a Stable Diffusion 1.x model into a text-to-video model by adding the motion "
                   "adapter's temporal layers (diffusers' UNetMotionModel.from_unet2d, sharing the model's weights). "
                   "Sample it with T2VSampler on a T2VEmptyLatentVideo (text-to-video) or with T2VVideoToVideo; as "
                   "diffusers' AnimateDiff pipelines. Videos longer than the adapter's limit (32 frames) need "
                   "T2VContextWindows. Returns a patched copy; the input model is unchanged.")
    CATEGORY = "Text2Video/animatediff"
    RETURN_TYPES = ("T2V_MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("T2V_MODEL", {"tooltip": "A Stable Diffusion 1.x model from T2VModelLoader."}),
            "motion_adapter": ("T2V_MOTION_ADAPTER", {"tooltip": "The motion adapter from T2VMotionAdapterLoader."}),
        }}

    def patch(self, model, motion_adapter):
        problem = adapter_problem(model, motion_adapter)
        if problem:
            raise NodeInputError(APPLY_ADAPTER, "model", problem)
        return (animated(model, motion_adapter),)


class T2VFreeInit:
    DESCRIPTION = ("FreeInit (diffusers' enable_free_init): sampling from noise runs `iterations` times; between "
                   "runs the video is re-noised and only its low frequencies are kept, with high frequencies from "
                   "fresh noise, for more consistent motion at `iterations` times the cost. Works with T2VSampler "
                   "runs from noise (denoise 1, whole schedule) on video models. Returns a patched copy of the model.")
    CATEGORY = "Text2Video/animatediff"
    RETURN_TYPES = ("T2V_MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        defaults = FreeInitOptions()
        return {"required": {
            "model": ("T2V_MODEL", {"tooltip": "The video model to sample with FreeInit."}),
            "iterations": ("INT", {"default": defaults.iterations, "min": 1, "max": 16,
                                   "tooltip": "Sampling runs in all (1 = plain sampling)."}),
            "method": (list(FILTERS), {"default": defaults.method,
                                       "tooltip": "Low-pass filter over time and space: butterworth (smooth), "
                                                  "gaussian (smoother), ideal (a sharp cut)."}),
            "order": ("INT", {"default": defaults.order, "min": 1, "max": 16,
                              "tooltip": "Butterworth order: higher approaches the ideal filter."}),
            "spatial_stop_frequency": ("FLOAT", {"default": defaults.spatial_stop_frequency, "min": 0.0, "max": 1.0,
                                                 "step": 0.01, "tooltip": "Normalised spatial cut-off: the share of "
                                                                          "spatial frequencies kept from the video."}),
            "temporal_stop_frequency": ("FLOAT", {"default": defaults.temporal_stop_frequency, "min": 0.0,
                                                  "max": 1.0, "step": 0.01,
                                                  "tooltip": "Normalised temporal cut-off: the share of frequencies "
                                                             "over time kept from the video."}),
        }, "optional": {
            "fast_sampling": ("BOOLEAN", {"default": defaults.fast_sampling,
                                          "tooltip": "Coarse to fine: the first runs take fewer steps (run i of n "
                                                     "takes steps * i / n), so FreeInit costs about half as much."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, spatial_stop_frequency=None, temporal_stop_frequency=None):
        return validation_verdict(lambda: check_widget_values(cls, spatial_stop_frequency=spatial_stop_frequency,
                                                              temporal_stop_frequency=temporal_stop_frequency))

    def patch(self, model, iterations, method, order, spatial_stop_frequency, temporal_stop_frequency,
              fast_sampling=False):
        check_widget_values(T2VFreeInit, iterations=iterations, method=method, order=order,
                            spatial_stop_frequency=spatial_stop_frequency,
                            temporal_stop_frequency=temporal_stop_frequency)
        if not model.family.video_unet:
            raise NodeInputError(FREE_INIT, "model", f"'{model.name}' is a {model.family.description} image model; "
                                 "FreeInit filters over time and is for video models (AnimateDiff, 3D UNets)")
        options = FreeInitOptions(int(iterations), method, int(order), float(spatial_stop_frequency),
                                  float(temporal_stop_frequency), bool(fast_sampling))
        return (model.with_free_init(options),)


NODE_CLASS_MAPPINGS = {ADAPTER_LOADER: T2VMotionAdapterLoader, APPLY_ADAPTER: T2VApplyMotionAdapter,
                       FREE_INIT: T2VFreeInit}
NODE_DISPLAY_NAME_MAPPINGS = {ADAPTER_LOADER: "Load Motion Adapter (AnimateDiff)",
                              APPLY_ADAPTER: "Apply Motion Adapter (AnimateDiff)", FREE_INIT: "FreeInit (Text2Video)"}
