"""ComfyUI-Text2Video: text-to-video, video-to-video and Text2Video-Zero nodes for ComfyUI."""

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]


def __getattr__(name: str):
    """The node mappings, imported on first use: `python -m comfyui_text2video` can then stop cleanly on a
    Ctrl-C while torch is still importing (ComfyUI asks for the mappings right after importing the pack)."""
    if name in __all__:
        from . import nodes

        return getattr(nodes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
