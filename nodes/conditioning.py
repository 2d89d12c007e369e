"""T2VTextEncode: a prompt -> core CONDITIONING."""

from __future__ import annotations

import weakref
from collections import OrderedDict

from ..errors import NodeInputError
from ..models.text_encoding import encode_text, to_conditioning

PROMPTS_KEPT = 16
_encoded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per text encoder, its last `PROMPTS_KEPT` encoded prompts: a workflow run again in the same process (the
headless runner, a script) does not encode its prompts again. They go when the text encoder does."""


def encoded_prompt(clip, text: str) -> tuple:
    """`encode_text(clip, text)`, from the cache when this text encoder already encoded `text`."""
    recent = _encoded.setdefault(clip.text_encoder, OrderedDict())
    if text not in recent:
        recent[text] = encode_text(clip, text)
        while len(recent) > PROMPTS_KEPT:
            recent.popitem(last=False)
    recent.move_to_end(text)
    return recent[text]


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
        if not clip.family.encodes_text:
            raise NodeInputError("T2VTextEncode", "clip", f"'{clip.name}' is a {clip.family.description} model: its "
                                 "T2V_CLIP is a CLIP image encoder, not a text encoder; connect it to "
                                 "T2VSVDConditioning with the image to animate")
        return (to_conditioning(*encoded_prompt(clip, text)),)


NODE_CLASS_MAPPINGS = {"T2VTextEncode": T2VTextEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"T2VTextEncode": "Text2Video Text Encode"}
