"""T2VTextEncode: a prompt -> core CONDITIONING."""

from __future__ import annotations

from ..models.text_encoding import encode_text, to_conditioning


class T2VTextEncode:
    DESCRIPTION = ("Encodes a prompt with the model's CLIP text encoder into CONDITIONING, exactly as diffusers "
                   "does for these models (77 tokens; longer prompts are cut with a warning).")
    CATEGORY = "Text2Video/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": ("T2V_CLIP", {"tooltip": "The text encoder from T2VModelLoader."}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "default": "",
                                "tooltip": "The prompt. An empty prompt is valid (the usual negative prompt)."}),
        }}

    def encode(self, clip, text):
        return (to_conditioning(*encode_text(clip, text)),)


NODE_CLASS_MAPPINGS = {"T2VTextEncode": T2VTextEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"T2VTextEncode": "Text2Video Text Encode"}
