"""API-format workflows for the integration tests, built from small pieces."""

from __future__ import annotations

TINY_T2V = "builtin:tiny-text2video"
TINY_SD = "builtin:tiny-sd15"
SIZE = 64
FRAMES = 4


def node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def link(node_id: str, output: int = 0) -> list:
    return [node_id, output]


def model_and_prompts(model_name: str = TINY_T2V, dtype: str = "auto", positive: str = "a red fox running",
                      negative: str = "") -> dict:
    """Nodes 1 (loader), 2 (positive), 3 (negative)."""
    return {
        "1": node("T2VModelLoader", model_name=model_name, dtype=dtype),
        "2": node("T2VTextEncode", clip=link("1", 1), text=positive),
        "3": node("T2VTextEncode", clip=link("1", 1), text=negative),
    }


def sampler(latent: list, seed: int, steps: int, denoise: float = 1.0, **extra) -> dict:
    return node("T2VSampler", model=link("1"), positive=link("2"), negative=link("3"), latent=latent, seed=seed,
                steps=steps, cfg=7.5, sampler_name="ddim", scheduler="normal", denoise=denoise, **extra)


def save_video(images: list, prefix: str, format: str = "mp4") -> dict:
    return node("T2VSaveVideo", images=images, fps=8.0, filename_prefix=prefix, format=format, quality=80)


def text_to_video(prefix: str, seed: int = 1, steps: int = 2, model_name: str = TINY_T2V, frames: int = FRAMES,
                  format: str = "mp4", dtype: str = "auto", size: int = SIZE) -> dict:
    """Loader -> two prompts -> empty latent -> sampler (node 5) -> decode (node 6) -> save (node 7)."""
    return {
        **model_and_prompts(model_name, dtype),
        "4": node("T2VEmptyLatentVideo", width=size, height=size, frames=frames, batch_size=1),
        "5": sampler(link("4"), seed, steps),
        "6": node("T2VVAEDecode", vae=link("1", 2), latent=link("5"), frames_per_batch=8),
        "7": save_video(link("6"), prefix, format),
    }


def video_to_video(images: dict, prefix: str, seed: int = 1, steps: int = 4, strength: float = 0.5) -> dict:
    """`images` (nodes "10", "11", ... producing IMAGE at "10") -> T2VVideoToVideo (node 5) -> decode -> save."""
    return {
        **model_and_prompts(),
        **images,
        "5": node("T2VVideoToVideo", model=link("1"), positive=link("2"), negative=link("3"), vae=link("1", 2),
                  images=link("10"), seed=seed, steps=steps, cfg=7.5, sampler_name="ddim", scheduler="normal",
                  strength=strength, width=SIZE, height=SIZE, frames_per_batch=8),
        "6": node("T2VVAEDecode", vae=link("1", 2), latent=link("5"), frames_per_batch=8),
        "7": save_video(link("6"), prefix),
    }


def text2video_zero(prefix: str, seed: int = 1) -> dict:
    """The all-in-one Text2Video-Zero node on the tiny image model, with a short schedule."""
    return {
        **model_and_prompts(TINY_SD),
        "5": node("T2VText2VideoZero", model=link("1"), positive=link("2"), negative=link("3"), seed=seed, steps=6,
                  cfg=7.5, sampler_name="ddim", scheduler="normal", width=SIZE, height=SIZE, frames=3,
                  motion_x=12.0, motion_y=12.0, t0=2, t1=3, chunk_size=0),
        "6": node("T2VVAEDecode", vae=link("1", 2), latent=link("5"), frames_per_batch=8),
        "7": save_video(link("6"), prefix),
    }
