"""Text encoding as diffusers does it, and the VAE's half-precision safety nets."""

from __future__ import annotations

import logging

import torch
from reference_pipelines import text2video_pipeline

from comfyui_text2video.models.handles import VaeHandle
from comfyui_text2video.nodes.conditioning import T2VTextEncode
from comfyui_text2video.nodes.vae import T2VVAEDecode

LONG_PROMPT = " ".join(f"word{i}" for i in range(60))  # far more than 77 character-level tokens


def test_long_prompts_are_cut_like_the_reference_with_a_warning(tiny_t2v, caplog):
    _model, clip, _vae = tiny_t2v
    with caplog.at_level(logging.WARNING):
        ours = T2VTextEncode().encode(clip, LONG_PROMPT)[0][0][0]
    reference, _negative = text2video_pipeline(*tiny_t2v).encode_prompt(LONG_PROMPT, "cpu", 1, False)
    assert torch.equal(ours, reference)
    assert "T2VTextEncode: the prompt is longer than 77 tokens; this part was cut" in caplog.text


class _HalfPrecisionOverflow(torch.nn.Module):
    """Wraps a VAE so that decoding in float16 gives NaNs, as some real VAEs do."""

    def __init__(self, vae):
        super().__init__()
        self.inner = vae
        self.config = vae.config
        self.decoded_dtypes = []

    @property
    def dtype(self):
        return self.inner.dtype

    def decode(self, latents, return_dict=False):
        self.decoded_dtypes.append(self.inner.dtype)
        pixels = self.inner.decode(latents.to(self.inner.dtype), return_dict=False)[0]
        return (torch.full_like(pixels, float("nan")) if self.inner.dtype == torch.float16 else pixels,)


def half_vae(tiny_t2v):
    """The tiny VAE in float16, and a float32 handle with the same (rounded) weights."""
    _model, _clip, vae = tiny_t2v
    half = type(vae.vae).from_config(vae.vae.config)
    half.load_state_dict(vae.vae.state_dict())
    half.to(torch.float16)
    same_weights = type(vae.vae).from_config(vae.vae.config)
    same_weights.load_state_dict(half.state_dict())
    return half, VaeHandle("float32", same_weights.float(), torch.device("cpu"))


def test_nan_decodes_in_half_precision_are_redone_in_float32(tiny_t2v, caplog):
    half, float32_handle = half_vae(tiny_t2v)
    half.register_to_config(force_upcast=False)
    wrapped = _HalfPrecisionOverflow(half)
    handle = VaeHandle("half", wrapped, torch.device("cpu"))
    latent = {"samples": torch.randn(1, 4, 2, 4, 4)}
    with caplog.at_level(logging.WARNING):
        frames = T2VVAEDecode().decode(handle, latent, frames_per_batch=1)[0]
    assert torch.isfinite(frames).all()
    expected = T2VVAEDecode().decode(float32_handle, latent)[0]
    assert (frames - expected).abs().max() < 1e-4
    assert "decoding again in float32" in caplog.text
    assert wrapped.decoded_dtypes == [torch.float16, torch.float32] * 2
    assert wrapped.inner.dtype == torch.float16  # restored afterwards


def test_force_upcast_vaes_decode_in_float32(tiny_t2v):
    inner, _float32_handle = half_vae(tiny_t2v)
    inner.register_to_config(force_upcast=True)
    wrapped = _HalfPrecisionOverflow(inner)
    frames = T2VVAEDecode().decode(VaeHandle("upcast", wrapped, torch.device("cpu")),
                                   {"samples": torch.randn(1, 4, 2, 4, 4)})[0]
    assert torch.isfinite(frames).all()
    assert wrapped.decoded_dtypes == [torch.float32]
    assert inner.dtype == torch.float16


def test_vae_encode_of_a_core_video_equals_that_of_its_frames(tiny_t2v):
    from comfyui_text2video.nodes.vae import T2VVAEEncode
    from test_video_nodes import CoreVideo

    frames = torch.rand(3, 32, 32, 3)
    from_video = T2VVAEEncode().encode(tiny_t2v[2], CoreVideo(frames, 24))[0]["samples"]
    assert torch.equal(from_video, T2VVAEEncode().encode(tiny_t2v[2], frames)[0]["samples"])
