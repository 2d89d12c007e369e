"""VAE encode and decode of videos, a few frames at a time."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch

from .handles import VaeHandle

log = logging.getLogger(__name__)


_TILING_ATTRIBUTES = ("use_tiling", "tile_sample_min_size", "tile_latent_min_size", "tile_overlap_factor")


@contextlib.contextmanager
def _tiled(handle: VaeHandle):
    """The handle's tiling switched on in the VAE for the duration; the VAE's own settings come back afterwards."""
    if handle.tiling is None:
        yield
        return
    vae = handle.vae
    saved = {name: getattr(vae, name) for name in _TILING_ATTRIBUTES}
    vae.use_tiling = True
    vae.tile_sample_min_size = handle.tiling.size
    vae.tile_latent_min_size = handle.tiling.size // handle.spatial_scale
    vae.tile_overlap_factor = handle.tiling.overlap / handle.tiling.size
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(vae, name, value)


def _chunks(total: int, frames_per_batch: int) -> Iterator[slice]:
    size = frames_per_batch if frames_per_batch > 0 else max(total, 1)
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


@contextlib.contextmanager
def _float32(vae: torch.nn.Module):
    """Run `vae` in float32 for the duration, restoring its dtype afterwards."""
    dtype = vae.dtype
    if dtype == torch.float32:
        yield
        return
    vae.to(torch.float32)
    try:
        yield
    finally:
        vae.to(dtype)


def _decode_chunk(handle: VaeHandle, latents: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One chunk of frames through the decoder (a temporal decoder is told they are `num_frames` frames of a clip)."""
    frames = {"num_frames": latents.shape[0]} if handle.temporal else {}
    with torch.no_grad():
        return handle.vae.decode(latents.to(dtype), return_dict=False, **frames)[0].float()


def decode_frames(handle: VaeHandle, latents: torch.Tensor, frames_per_batch: int, on_chunk=None,
                  output_device: torch.device | None = None) -> torch.Tensor:
    """Raw latent frames `[N, C, h, w]` -> pixels `[N, H, W, 3]` float32 in 0..1 on `output_device`.

    Each decoded chunk moves to `output_device` (default: the latents' device) at once, so a long video
    never sits in the VAE's device memory as a whole.

    Half-precision chunks that come out NaN are decoded again in float32 (with a warning);
    VAEs whose config sets `force_upcast` always decode in float32.
    """
    handle.load_for_use()
    vae = handle.vae
    upcast = handle.force_upcast and vae.dtype != torch.float32
    frames = []
    with _float32(vae) if upcast else contextlib.nullcontext(), _tiled(handle):
        for part in _chunks(latents.shape[0], frames_per_batch):
            pixels = _decode_chunk(handle, latents[part], vae.dtype)
            if torch.isnan(pixels).any() and vae.dtype != torch.float32:
                log.warning("T2VVAEDecode: %s decode produced NaNs (black frames); decoding again in float32",
                            vae.dtype)
                with _float32(vae):
                    pixels = _decode_chunk(handle, latents[part], torch.float32)
            frames.append((pixels / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).to(output_device or latents.device))
            if on_chunk is not None:
                on_chunk(part.stop, latents.shape[0])
    return torch.cat(frames)


def encode_frames(handle: VaeHandle, images: torch.Tensor, frames_per_batch: int,
                  posterior_noise: torch.Tensor | None = None, on_chunk=None) -> torch.Tensor:
    """Pixels `[N, H, W, 3]` in 0..1 -> raw latents `[N, C, h, w]` float32 (ComfyUI's LATENT convention).

    Without `posterior_noise` the posterior mean; with it (drawn once as `[N, C, h, w]` for the
    whole video, so the chunking does not change it) a posterior sample `mean + std * noise`.
    """
    handle.load_for_use()
    vae = handle.vae
    out = []
    with _float32(vae) if handle.force_upcast else contextlib.nullcontext(), _tiled(handle):
        for part in _chunks(images.shape[0], frames_per_batch):
            pixels = images[part].to(handle.device).permute(0, 3, 1, 2) * 2 - 1
            with torch.no_grad():
                posterior = vae.encode(pixels.to(vae.dtype)).latent_dist
            latents = posterior.mean if posterior_noise is None else \
                posterior.mean + posterior.std * posterior_noise[part].to(posterior.mean)
            out.append(latents.float())
            if on_chunk is not None:
                on_chunk(part.stop, images.shape[0])
    return torch.cat(out)
