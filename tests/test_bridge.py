"""The bridge's plain fallbacks outside ComfyUI, and where the pack hands models to the host's memory management."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import gc
import weakref
from pathlib import Path

import pytest
import torch

from comfyui_text2video import bridge
from comfyui_text2video.models import loading
from comfyui_text2video.models import vae_ops
from comfyui_text2video.models.handles import ClipHandle, VaeHandle
from comfyui_text2video.models.text_encoding import encode_text


@pytest.fixture(autouse=True)
def plain_bridge():
    """Each test starts from the default folders, device and interrupt state, and leaves them so."""
    bridge.reset_folders()
    bridge.set_device("auto")
    bridge.clear_interrupt()
    yield
    bridge.reset_folders()
    bridge.set_device("auto")
    bridge.clear_interrupt()


def test_the_tests_run_outside_comfyui():
    assert not bridge.IN_COMFYUI
    assert not bridge.host_owns_models()


def test_t2v_data_dir_moves_every_headless_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("T2V_DATA_DIR", str(tmp_path))
    assert bridge.default_data_root() == tmp_path
    assert bridge.input_directory() == tmp_path / "input"
    assert bridge.output_directory() == tmp_path / "output"
    assert bridge.model_roots() == [(bridge.MODEL_FOLDER, tmp_path / "models" / "text2video"),
                                    (bridge.DIFFUSERS_FOLDER, tmp_path / "models" / "diffusers")]
    assert bridge.builtin_cache_dir() == tmp_path / "models" / "text2video" / ".builtin"


def test_without_t2v_data_dir_the_root_is_a_per_user_folder(monkeypatch):
    monkeypatch.delenv("T2V_DATA_DIR", raising=False)
    root = bridge.default_data_root()
    assert root.name == "comfyui-text2video" and root.is_absolute()


def test_set_folders_overrides_single_folders_until_reset(monkeypatch, tmp_path):
    monkeypatch.setenv("T2V_DATA_DIR", str(tmp_path / "root"))
    bridge.set_folders(output=tmp_path / "out")
    assert bridge.output_directory() == (tmp_path / "out").resolve()
    assert bridge.input_directory() == tmp_path / "root" / "input"
    bridge.set_folders(models=tmp_path / "m", input=tmp_path / "in")
    assert bridge.model_roots()[1] == (bridge.DIFFUSERS_FOLDER, (tmp_path / "m").resolve() / "diffusers")
    assert bridge.input_directory() == (tmp_path / "in").resolve()
    bridge.reset_folders()
    assert bridge.output_directory() == tmp_path / "root" / "output"


def test_check_interrupt_raises_keyboard_interrupt_once_after_a_request():
    bridge.check_interrupt()
    bridge.request_interrupt()
    with pytest.raises(KeyboardInterrupt):
        bridge.check_interrupt()
    bridge.check_interrupt()  # the request is used up


def test_clear_interrupt_withdraws_a_request():
    bridge.request_interrupt()
    bridge.clear_interrupt()
    bridge.check_interrupt()


def test_auto_dtype_is_float32_on_the_cpu_and_float16_on_cuda():
    assert bridge.auto_dtype(torch.device("cpu")) == torch.float32
    assert bridge.auto_dtype(torch.device("cuda")) == torch.float16


def test_set_device_forces_the_compute_device():
    bridge.set_device("cpu")
    assert bridge.compute_device() == torch.device("cpu")
    assert bridge.intermediate_device() == torch.device("cpu")
    bridge.set_device("auto")
    assert bridge.compute_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_headless_model_roles_compute_and_wait_on_the_compute_device():
    bridge.set_device("cpu")
    for role in bridge.ROLES:
        assert bridge.load_device(role) == bridge.offload_device(role) == torch.device("cpu")


def test_a_managed_module_sits_on_its_device_headless():
    bridge.set_device("cpu")
    module = torch.nn.Linear(2, 2)
    managed = bridge.ManagedModule(module, bridge.VAE)
    assert managed.module is module and managed.device == torch.device("cpu") and managed.patcher is None
    managed.load_for_use()
    assert module.weight.device == torch.device("cpu")


def test_an_unknown_role_is_refused():
    with pytest.raises(ValueError, match="unknown model role"):
        bridge.ManagedModule(torch.nn.Linear(2, 2), "upscaler")


def test_progress_counts_headless_without_comfyui():
    with bridge.Progress(3, "test") as progress:
        for done in range(1, 4):
            progress.update(done)


class NoPatch:
    """A model patch that changes nothing."""

    def installed(self, unet, frames_per_group):
        return contextlib.nullcontext()


class RecordingModule:
    """Stands in for `ManagedModule`: records when the pack asks for the weights."""

    def __init__(self, log: list, name: str):
        self.log, self.name = log, name

    def load_for_use(self):
        self.log.append(self.name)


def test_models_are_loaded_for_use_right_before_they_run(tiny_t2v):
    """Sampling, text encoding and the VAE each ask the host for their weights first (ComfyUI may have offloaded them)."""
    model, clip, vae = tiny_t2v
    log = []
    clip = ClipHandle(clip.name, clip.tokenizer, clip.text_encoder, clip.device, RecordingModule(log, "clip"))
    vae = VaeHandle(vae.name, vae.vae, vae.device, RecordingModule(log, "vae"))
    model = dataclasses.replace(model, managed=RecordingModule(log, "unet"))
    encode_text(clip, "a fox")
    with model.with_patch(NoPatch()).patched(frames_per_group=2):
        pass
    latents = vae_ops.encode_frames(vae, torch.rand(2, 64, 64, 3), frames_per_batch=1)
    vae_ops.decode_frames(vae, latents, frames_per_batch=1)
    assert log == ["clip", "unet", "vae", "vae"]


def test_loaded_handles_carry_their_managed_components(tiny_t2v):
    model, clip, vae = tiny_t2v
    assert model.managed.module is model.unet and model.managed.role == bridge.DENOISER
    assert clip.managed.module is clip.text_encoder and clip.managed.role == bridge.TEXT_ENCODER
    assert vae.managed.module is vae.vae and vae.managed.role == bridge.VAE
    assert model.device == model.managed.device


def test_headless_cache_keeps_models_loaded(tiny_t2v):
    again = loading.load_model("builtin:tiny-text2video", "float32")
    assert again[0].unet is tiny_t2v[0].unet
    auto = loading.load_model("builtin:tiny-text2video", "auto")
    assert auto[0].unet is tiny_t2v[0].unet, "auto on the CPU is float32: the same model"


def test_inside_a_host_the_cache_holds_models_only_while_someone_uses_them(monkeypatch, data_dir):
    """The ComfyUI policy: found again while handles are alive, really gone once every handle is dropped."""
    monkeypatch.setattr(bridge, "host_owns_models", lambda: True)
    monkeypatch.setattr(loading, "_cache", loading._ModelCache())
    handles = loading.load_model("builtin:tiny-sd15", "float32")
    assert loading.load_model("builtin:tiny-sd15", "float32")[0].unet is handles[0].unet
    patched = handles[0].with_patch(NoPatch())
    del handles
    gc.collect()
    assert loading.load_model("builtin:tiny-sd15", "float32")[0].unet is patched.unet, "a patched clone keeps it"
    unet_ref = weakref.ref(patched.unet)
    del patched
    gc.collect()
    assert unet_ref() is None, "the pack's cache must not keep a model alive"
    assert isinstance(loading.load_model("builtin:tiny-sd15", "float32")[0].unet, torch.nn.Module)


def test_builtin_cache_dir_is_inside_the_packs_models_folder(data_dir):
    assert Path(bridge.builtin_cache_dir()).parent == Path(data_dir) / "models" / "text2video"


def test_latent_preview_is_a_small_rgb_image_of_frame_zero():
    from comfyui_text2video.nodes.common import latent_preview

    latents = torch.zeros(1, 4, 3, 6, 8)
    latents[0, 0, 0] = 1.0  # only frame 0, channel 0: a warm colour
    image = latent_preview(latents)
    assert image.size == (8, 6) and image.mode == "RGB"
    red, green, blue = image.getpixel((0, 0))
    assert red > blue
    assert latent_preview(torch.zeros(1, 16, 1, 2, 2)) is None  # not a 4-channel latent: no guess


@pytest.mark.parametrize("method, shown", [("none", False), ("auto", True), ("latent2rgb", True), ("taesd", True)])
def test_in_comfyui_previews_follow_its_preview_method_and_size(monkeypatch, method, shown):
    """ComfyUI's `--preview-method` (default none) and `--preview-size` decide; headless never shows one."""
    import enum
    import types

    assert bridge.shows_previews() is False and bridge.preview_size() == 512
    methods = enum.Enum("LatentPreviewMethod", {"NoPreviews": "none", "Auto": "auto", "Latent2RGB": "latent2rgb",
                                                "TAESD": "taesd"})
    cli_args = types.SimpleNamespace(LatentPreviewMethod=methods,
                                     args=types.SimpleNamespace(preview_method=methods(method), preview_size=256))
    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))
    monkeypatch.setitem(sys.modules, "comfy.cli_args", cli_args)
    monkeypatch.setattr(bridge, "IN_COMFYUI", True)
    assert bridge.shows_previews() is shown and bridge.preview_size() == 256
