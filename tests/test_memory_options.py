"""Memory options: feed-forward chunking, VAE tiling, CPU offload, and clear out-of-memory errors."""

from __future__ import annotations

import pytest
import torch

from comfyui_text2video import bridge
from comfyui_text2video.errors import NodeInputError, NodeOutOfMemory
from comfyui_text2video.models import loading
from comfyui_text2video.models.loading import load_model
from comfyui_text2video.nodes import conditioning
from comfyui_text2video.nodes.conditioning import T2VTextEncode
from comfyui_text2video.nodes.latent import T2VEmptyLatentVideo
from comfyui_text2video.nodes.long_video import T2VContextWindows
from comfyui_text2video.nodes.memory import T2VFeedForwardChunking, T2VVAETiling
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.vae import T2VVAEDecode, T2VVAEEncode
from comfyui_text2video.nodes.video2video import T2VVideoToVideo


def sample(model, clip, frames=4, size=32):
    positive = T2VTextEncode().encode(clip, "a red circle")[0]
    negative = T2VTextEncode().encode(clip, "")[0]
    latent = T2VEmptyLatentVideo().create(size, size, frames, 1)[0]
    return T2VSampler().sample(model, positive, negative, latent, 1, 2, 7.5, "ddim", "normal", 1.0)[0]


def test_feed_forward_chunking_gives_the_same_predictions_and_is_removed_afterwards(tiny_t2v):
    model, clip, _vae = tiny_t2v
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, 4, 4, generator=generator)
    context = torch.randn(2, 77, model.cross_attention_dim, generator=generator)
    chunked_model = T2VFeedForwardChunking().patch(model, 3)[0]  # 3 divides neither 16 tokens nor 6 frames
    ff = next(m for m in model.unet.modules() if type(m).__name__ == "FeedForward")
    chunk_sizes = []
    hook = ff.net[0].register_forward_pre_hook(lambda module, args: chunk_sizes.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            plain = model.unet(x, 500, encoder_hidden_states=context).sample
            with chunked_model.patched(frames_per_group=6) as unet:
                chunked = unet(x, 500, encoder_hidden_states=context).sample
    finally:
        hook.remove()
    assert (chunked - plain).abs().max() < 1e-5
    assert chunk_sizes == [6, 3, 3]  # the first (temporal) feed-forward: all 6 frames at once, then 3 at a time
    assert "forward" not in ff.__dict__  # the patch is gone after the run
    whole_run = sample(model, clip)["samples"]
    assert (sample(chunked_model, clip)["samples"] - whole_run).abs().max() < 1e-5 * whole_run.abs().max()


def test_vae_tiling_decodes_large_frames_close_to_untiled(tiny_t2v):
    _model, _clip, vae = tiny_t2v
    latent = {"samples": torch.randn(1, 4, 2, 16, 16, generator=torch.Generator().manual_seed(0))}
    plain = T2VVAEDecode().decode(vae, latent)[0]
    tiled_vae = T2VVAETiling().patch(vae, 64, 16)[0]
    calls = []
    hook = vae.vae.decoder.register_forward_pre_hook(lambda module, args: calls.append(tuple(args[0].shape[-2:])))
    try:
        tiled = T2VVAEDecode().decode(tiled_vae, latent)[0]
    finally:
        hook.remove()
    assert len(calls) > 4 and max(max(shape) for shape in calls) == 8  # 64-pixel tiles of the 128x128 frames
    assert tiled.shape == plain.shape
    # the random tiny VAE's global mid-block attention and per-tile group norms make this a hard case (README)
    assert (tiled - plain).abs().mean() < 0.12
    assert not vae.vae.use_tiling  # the VAE itself is untouched afterwards
    assert torch.equal(T2VVAEDecode().decode(vae, latent)[0], plain)
    calls.clear()
    hook = vae.vae.encoder.register_forward_pre_hook(lambda module, args: calls.append(tuple(args[0].shape[-2:])))
    try:
        encoded = T2VVAEEncode().encode(tiled_vae, plain)[0]["samples"]
    finally:
        hook.remove()
    untiled = T2VVAEEncode().encode(vae, plain)[0]["samples"]
    assert len(calls) > 4 and max(max(shape) for shape in calls) == 64
    assert encoded.shape == untiled.shape and (encoded - untiled).abs().mean() < 0.5 * untiled.abs().mean()


@pytest.mark.parametrize("size,overlap,name", [(100, 16, "tile_size"), (64, 40, "tile_overlap")])
def test_bad_tiles_are_refused(tiny_t2v, size, overlap, name):
    with pytest.raises(NodeInputError, match=f"T2VVAETiling: input '{name}'"):
        T2VVAETiling().patch(tiny_t2v[2], size, overlap)


def out_of_memory(*_args):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_while_sampling_names_the_node_and_what_would_fit(tiny_t2v):
    model, clip, _vae = tiny_t2v
    hook = model.unet.register_forward_pre_hook(out_of_memory)
    try:
        with pytest.raises(NodeOutOfMemory, match=r"T2VSampler: the GPU ran out of memory sampling 24 frames.*"
                                                  r"T2VContextWindows.*T2VFeedForwardChunking"):
            sample(model, clip, frames=24)
        windowed = T2VContextWindows().patch(model, 8, 2, "standard_static", "pyramid")[0]
        with pytest.raises(torch.cuda.OutOfMemoryError, match=r"lower T2VContextWindows' context_length \(now 8\)"):
            sample(windowed, clip, frames=24)
    finally:
        hook.remove()


def test_out_of_memory_while_decoding_names_frames_per_batch_and_tiling(tiny_t2v):
    _model, _clip, vae = tiny_t2v
    hook = vae.vae.decoder.register_forward_pre_hook(out_of_memory)
    try:
        with pytest.raises(NodeOutOfMemory, match=r"T2VVAEDecode: .*decoding 3 frames.*frames_per_batch to 1 "
                                                  r"\(now 8\).*T2VVAETiling.*Tried to allocate 2.00 GiB"):
            T2VVAEDecode().decode(vae, {"samples": torch.zeros(1, 4, 3, 4, 4)})
    finally:
        hook.remove()


def test_out_of_memory_in_video_to_video_names_the_node(tiny_t2v):
    model, clip, vae = tiny_t2v
    conditioning = T2VTextEncode().encode(clip, "")[0]
    hook = vae.vae.encoder.register_forward_pre_hook(out_of_memory)
    try:
        with pytest.raises(NodeOutOfMemory, match="T2VVideoToVideo: .*encoding and sampling 2 frames"):
            T2VVideoToVideo().refine(model, conditioning, conditioning, vae, torch.rand(2, 32, 32, 3), 0, 2, 7.5,
                                     "ddim", "normal", 0.5)
    finally:
        hook.remove()


# ------------------------------------------------------------------------------------------- loading and reuse


def test_sequential_cpu_offload_keeps_the_weights_off_the_device_and_gives_the_same_video(tiny_t2v):
    model, clip, _vae = tiny_t2v
    bridge.set_sequential_offload(True)
    try:
        offloaded, offloaded_clip, _offloaded_vae = load_model("builtin:tiny-text2video", "float32")
    finally:
        bridge.set_sequential_offload(False)
    assert offloaded.unet is not model.unet
    assert {p.device.type for p in offloaded.unet.parameters()} == {"meta"}  # the weights wait in CPU memory
    assert torch.allclose(sample(offloaded, offloaded_clip)["samples"], sample(model, clip)["samples"], atol=1e-6)


def test_loading_prints_no_accelerate_warning_and_pickles_load_into_empty_modules(tiny_t2v, tmp_path, capfd):
    from diffusers import UNet3DConditionModel

    unet = tiny_t2v[0].unet
    unet.save_pretrained(tmp_path, safe_serialization=False)
    loaded = loading._load_component(UNet3DConditionModel, tmp_path, torch.float32, "torch_dtype")
    folder = loading.resolve_model_folder("builtin:tiny-text2video")
    loading._load_part("unet", folder, tiny_t2v[0].family, torch.float32)
    captured = capfd.readouterr()
    assert "accelerate" not in captured.err + captured.out
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), unet.state_dict().values()))
    assert not any(p.device.type == "meta" for p in loaded.parameters())


def test_a_prompt_encoded_again_is_reused(tiny_t2v, monkeypatch):
    clip = tiny_t2v[1]
    first = T2VTextEncode().encode(clip, "a prompt only this test encodes")[0]
    monkeypatch.setattr(conditioning, "encode_text", lambda *args: pytest.fail("encoded again"))
    again = T2VTextEncode().encode(clip, "a prompt only this test encodes")[0]
    assert again[0][0] is first[0][0]
