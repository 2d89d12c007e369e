"""All node classes of the pack, one module per area."""

from importlib import import_module

_AREAS = ["loaders", "conditioning", "latent", "sampling", "vae", "video2video", "video", "text2video_zero",
          "core_model", "long_video", "memory", "controlnet", "instruct_pix2pix", "svd", "animatediff",
          "i2vgen_xl"]

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _area in _AREAS:
    _module = import_module(f".{_area}", __name__)
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
