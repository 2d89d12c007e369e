"""ControlNet: load one, and attach it with its control frames to both conditionings (as core ControlNetApplyAdvanced)."""

from __future__ import annotations

from ..errors import ModelLoadError, NodeInputError
from ..models.controlnet import ControlSpec, available_controlnets, load_controlnet
from ..models.families.base import CONTROL_KEY
from .common import check_widget_values, validation_verdict
from .vae import check_images


class T2VControlNetLoader:
    DESCRIPTION = ("Loads a diffusers ControlNet (a folder with config.json and weights) from models/controlnet. "
                   "builtin:tiny-controlnet fits builtin:tiny-sd15 (random weights, for trying workflows).")
    CATEGORY = "Text2Video/loaders"
    RETURN_TYPES = ("T2V_CONTROLNET",)
    RETURN_NAMES = ("controlnet",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "controlnet_name": (available_controlnets(), {"tooltip": "A diffusers ControlNet folder in "
                                                          "models/controlnet (by its path there), or a built-in."}),
        }}

    def load(self, controlnet_name):
        try:
            return (load_controlnet(controlnet_name),)
        except ModelLoadError as exc:
            raise NodeInputError("T2VControlNetLoader", "controlnet_name", str(exc)) from exc


class T2VApplyControlNet:
    DESCRIPTION = ("Attaches a ControlNet and its control frames (edges, poses, depth: one image per video frame, or "
                   "one for all) to both conditionings. Apply it twice to stack two ControlNets; their residuals "
                   "add up. With a T2VCrossFrameAttention model the ControlNet's self-attention is patched too.")
    CATEGORY = "Text2Video/conditioning"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "What the video should show."}),
                "negative": ("CONDITIONING", {"tooltip": "What to steer away from."}),
                "controlnet": ("T2V_CONTROLNET", {"tooltip": "From T2VControlNetLoader."}),
                "images": ("IMAGE", {"tooltip": "Control frames (e.g. core Canny on T2VLoadVideo's frames): one per "
                                                "video frame, or one for all frames. Resized to the frame size."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                       "tooltip": "Multiplies the ControlNet's residuals (diffusers' "
                                                  "controlnet_conditioning_scale)."}),
            },
            "optional": {
                "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                            "tooltip": "Share of the steps before the ControlNet starts "
                                                       "(control_guidance_start)."}),
                "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                          "tooltip": "Share of the steps after which it stops (control_guidance_end)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, strength=None, start_percent=None, end_percent=None):
        return validation_verdict(lambda: check_widget_values(cls, strength=strength, start_percent=start_percent,
                                                              end_percent=end_percent))

    def apply(self, positive, negative, controlnet, images, strength, start_percent=0.0, end_percent=1.0):
        node = "T2VApplyControlNet"
        check_widget_values(T2VApplyControlNet, strength=strength, start_percent=start_percent,
                            end_percent=end_percent)
        check_images(node, "images", images)
        if start_percent > end_percent:
            raise NodeInputError(node, "end_percent", f"{end_percent} is before start_percent {start_percent}")
        spec = ControlSpec(controlnet, images, float(strength), float(start_percent), float(end_percent))
        return tuple([[embeds, {**meta, CONTROL_KEY: (*meta.get(CONTROL_KEY, ()), spec)}]
                      for embeds, meta in conditioning] for conditioning in (positive, negative))


NODE_CLASS_MAPPINGS = {"T2VControlNetLoader": T2VControlNetLoader, "T2VApplyControlNet": T2VApplyControlNet}
NODE_DISPLAY_NAME_MAPPINGS = {"T2VControlNetLoader": "Load ControlNet (Text2Video)",
                              "T2VApplyControlNet": "Apply ControlNet (Text2Video)"}
