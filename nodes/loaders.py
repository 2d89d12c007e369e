"""T2VModelLoader: a diffusers folder (or a built-in tiny model) -> model, text encoder, VAE."""

from __future__ import annotations

from ..errors import ModelLoadError, NodeInputError
from ..models.loading import DTYPE_CHOICES, available_models, load_model


class T2VModelLoader:
    DESCRIPTION = ("Loads a diffusers model folder from models/text2video or models/diffusers: text-to-video "
                   "(ModelScope, zeroscope), Stable Diffusion 1.x/2.x and SDXL (for Text2Video-Zero and AnimateDiff), "
                   "InstructPix2Pix, I2VGen-XL or Stable Video Diffusion. "
                   "builtin:micro-* are small models trained on coloured shapes moving (64x64, prompts like 'a red "
                   "circle moving right'); builtin:tiny-* have random weights and produce noise, for trying workflows.")
    CATEGORY = "Text2Video/loaders"
    RETURN_TYPES = ("T2V_MODEL", "T2V_CLIP", "T2V_VAE")
    RETURN_NAMES = ("model", "clip", "vae")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (available_models(), {"tooltip": "A diffusers folder (with model_index.json) in "
                                                "models/text2video or models/diffusers, or a built-in model."}),
            "dtype": (list(DTYPE_CHOICES), {"default": "auto", "tooltip": "Weight precision. auto: float16 on "
                                            "GPUs, float32 on the CPU."}),
        }}

    def load(self, model_name, dtype):
        try:
            return load_model(model_name, dtype)
        except ModelLoadError as exc:
            raise NodeInputError("T2VModelLoader", "model_name", str(exc)) from exc


NODE_CLASS_MAPPINGS = {"T2VModelLoader": T2VModelLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"T2VModelLoader": "Load Text2Video Model"}
