"""Model folders: listing, confinement, loading, refusals, and the built-ins' determinism."""

from __future__ import annotations

import json
import logging
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file

from comfyui_text2video import bridge
from comfyui_text2video.models.builtin import builtin_names, ensure_builtin
from comfyui_text2video.errors import ModelLoadError, NodeInputError
from comfyui_text2video.models.loading import available_models, clear_cache, load_model, resolve_model_folder
from comfyui_text2video.nodes.loaders import T2VModelLoader


@pytest.fixture(scope="module")
def builtin_folder(data_dir):
    return ensure_builtin("tiny-text2video", bridge.builtin_cache_dir())


@pytest.fixture
def models_dir(tmp_path, builtin_folder):
    """A private models folder (the built-ins stay where the session built them)."""
    bridge.set_folders(models=tmp_path / "models")
    clear_cache()
    yield tmp_path / "models"
    bridge.reset_folders()
    clear_cache()


def install(builtin_folder, models_dir, relative: str):
    target = models_dir / relative
    shutil.copytree(builtin_folder, target)
    return target


def test_lists_builtins_and_folders_by_relative_path(models_dir, builtin_folder):
    install(builtin_folder, models_dir, "diffusers/org/zeroscope-like")
    install(builtin_folder, models_dir, "text2video/mine")
    (models_dir / "text2video" / "not-a-model").mkdir()
    names = available_models()
    builtins = ["builtin:tiny-text2video", "builtin:tiny-sd15", "builtin:tiny-sdxl", "builtin:tiny-ip2p",
                "builtin:tiny-svd", "builtin:tiny-i2vgen-xl",
                "builtin:micro-text2video", "builtin:micro-sd"]
    assert names[:len(builtins)] == builtins
    assert set(names) - set(builtin_names()) == {"org/zeroscope-like", "mine"}


def test_a_name_in_both_folders_loads_from_text2video_with_a_warning(models_dir, builtin_folder, caplog):
    install(builtin_folder, models_dir, "diffusers/same")
    preferred = install(builtin_folder, models_dir, "text2video/same")
    with caplog.at_level(logging.WARNING):
        assert resolve_model_folder("same") == preferred.resolve()
    assert "text2video folder wins" in caplog.text


def test_a_folder_model_loads_like_the_builtin(models_dir, builtin_folder, tiny_t2v):
    install(builtin_folder, models_dir, "diffusers/copy")
    model, clip, vae = load_model("copy", "float32")
    assert model.family.name == "text2video_3d" and model.cross_attention_dim == 32
    for ours, builtin in ((model.unet, tiny_t2v[0].unet), (vae.vae, tiny_t2v[2].vae)):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), builtin.state_dict().values()))


def test_a_model_folder_linked_in_from_elsewhere_is_listed_and_loads(models_dir, builtin_folder, tmp_path):
    shared = install(builtin_folder, tmp_path, "shared-disk/zeroscope")
    (models_dir / "text2video").mkdir(parents=True)
    (models_dir / "text2video" / "linked").symlink_to(shared, target_is_directory=True)
    assert "linked" in available_models()
    assert load_model("linked", "float32")[0].family.name == "text2video_3d"


def test_loaded_models_are_reused(models_dir, builtin_folder):
    install(builtin_folder, models_dir, "diffusers/cached")
    first = load_model("cached", "float32")
    assert load_model("cached", "float32")[0].unet is first[0].unet


@pytest.mark.parametrize("name, message", [
    ("nope", r"no model named 'nope'"),
    ("../../etc", r"outside the models folder"),
    ("/etc", r"outside the models folder"),
    ("builtin:tiny-unknown", r"unknown built-in model"),
])
def test_bad_names_are_refused_by_the_loader_node(models_dir, name, message):
    with pytest.raises(NodeInputError, match=rf"T2VModelLoader: input 'model_name': .*{message}"):
        T2VModelLoader().load(name, "float32")


def test_a_missing_component_is_named(models_dir, builtin_folder):
    folder = install(builtin_folder, models_dir, "diffusers/broken")
    shutil.rmtree(folder / "vae")
    with pytest.raises(ModelLoadError, match=r"broken: the folder has no 'vae' component"):
        load_model("broken", "float32")


def test_an_unsupported_architecture_is_named(models_dir, builtin_folder):
    folder = install(builtin_folder, models_dir, "diffusers/unet1d")
    config = json.loads((folder / "unet" / "config.json").read_text())
    config["_class_name"] = "UNet1DModel"
    (folder / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"UNet1DModel; supported are"):
        load_model("unet1d", "float32")


def _replace_weights_with_pickle(folder, payload):
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    with open(folder / "unet" / "diffusion_pytorch_model.bin", "wb") as file:
        file.write(payload)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_runs_code_is_refused_and_does_not_run(models_dir, builtin_folder, tmp_path):
    folder = install(builtin_folder, models_dir, "diffusers/evil")
    marker = tmp_path / "payload-ran"
    _replace_weights_with_pickle(folder, pickle.dumps({"weight": _RunsCode(marker)}))
    with pytest.raises(ModelLoadError, match=r"needs full unpickling.*Convert the weights to safetensors"):
        load_model("evil", "float32")
    assert not marker.exists()


def test_plain_pickled_weights_load_weights_only(models_dir, builtin_folder, tmp_path, tiny_t2v):
    folder = install(builtin_folder, models_dir, "diffusers/legacy")
    state = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    buffer = tmp_path / "state.bin"
    torch.save(state, buffer)
    _replace_weights_with_pickle(folder, buffer.read_bytes())
    model, _clip, _vae = load_model("legacy", "float32")
    assert all(torch.equal(a, b) for a, b in zip(model.unet.state_dict().values(),
                                                 tiny_t2v[0].unet.state_dict().values()))


def test_builtins_are_built_deterministically(tmp_path, builtin_folder):
    rebuilt = ensure_builtin("tiny-text2video", tmp_path)
    for component in ("unet", "vae", "text_encoder"):
        ours = next((rebuilt / component).glob("*.safetensors"))
        theirs = next((builtin_folder / component).glob("*.safetensors"))
        first, second = load_file(ours), load_file(theirs)
        assert first.keys() == second.keys()
        assert all(torch.equal(first[key], second[key]) for key in first)
    assert (rebuilt / "tokenizer" / "vocab.json").read_bytes() == (builtin_folder / "tokenizer" / "vocab.json").read_bytes()


def test_auto_keeps_vaes_that_ask_for_float32_in_float32(models_dir, builtin_folder, monkeypatch):
    install(builtin_folder, models_dir, "diffusers/half")
    monkeypatch.setattr(bridge, "auto_dtype", lambda device: torch.float16)
    model, clip, vae = load_model("half", "auto")
    assert model.dtype == torch.float16 and clip.text_encoder.dtype == torch.float16
    assert vae.vae.dtype == torch.float32  # the VAE's config sets force_upcast
