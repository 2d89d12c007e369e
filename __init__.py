"""ComfyUI-Text2Video: text-to-video, video-to-video and Text2Video-Zero nodes for ComfyUI."""

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

WEB_DIRECTORY = "./web"
"""The editor extension (previews, the loader's upload button); ComfyUI serves it from the pack's folder."""


def __getattr__(name: str):
    """The node mappings, imported on first use: `python -m comfyui_text2video` can then stop cleanly on a
    Ctrl-C while torch is still importing (ComfyUI asks for the mappings right after importing the pack)."""
    if name in ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"):
        from . import nodes

        return getattr(nodes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
