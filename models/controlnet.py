"""ControlNets: diffusers ControlNet folders (`config.json` + weights) in the controlnet models folder, and the
built-in `builtin:tiny-controlnet` for `builtin:tiny-sd15`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .. import bridge
from .builtin import RECIPE_VERSION, TEXT_WIDTH, _activate_zero_layers, build_once
from .component_folders import ComponentKind
from .handles import _Managed
from .loading import _load_component, _read_json, resolve_dtype

CONTROLNET_CLASS = "ControlNetModel"
BUILTIN_CONTROLNETS = {"tiny-controlnet": "builtin:tiny-sd15"}
"""Built-in ControlNets and the built-in model each fits."""


@dataclasses.dataclass(frozen=True)
class ControlNetHandle(_Managed):
    """`T2V_CONTROLNET`: a diffusers `ControlNetModel`."""

    name: str
    module: torch.nn.Module
    device: torch.device
    managed: bridge.ManagedModule | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class ControlSpec:
    """What `T2VApplyControlNet` attaches to a conditioning: the ControlNet, its frames `[N, H, W, 3]` and settings."""

    controlnet: ControlNetHandle
    images: torch.Tensor
    strength: float
    start: float
    end: float


def _tiny_controlnet():
    from diffusers import ControlNetModel

    return ControlNetModel(
        in_channels=4, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8, conditioning_embedding_out_channels=(8, 8, 16, 16))


def _build_tiny_controlnet(folder: Path) -> None:
    """The built-in ControlNet, its zero-initialised convolutions made non-zero."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RECIPE_VERSION)
        model = _tiny_controlnet()
        _activate_zero_layers(model)
    model.save_pretrained(folder, safe_serialization=True)


CONTROLNETS = ComponentKind(
    noun="ControlNet", class_name=CONTROLNET_CLASS, diffusers_name="ControlNet",
    folder_phrase="the controlnet folder", relative_to="models/controlnet", roots=lambda: bridge.controlnet_roots(),
    builtins=BUILTIN_CONTROLNETS,
    build_builtin=lambda name: build_once(bridge.builtin_cache_dir(), name, "config.json", _build_tiny_controlnet))
available_controlnets = CONTROLNETS.available
resolve_controlnet_folder = CONTROLNETS.resolve


_loaded: dict[tuple, ControlNetHandle] = {}
CACHE_SIZE = 2  # two stacked ControlNets


def load_controlnet(name: str, dtype_choice: str = "auto") -> ControlNetHandle:
    """Load (or reuse) the ControlNet `name` under the host's memory management, on the denoiser's device."""
    from diffusers import ControlNetModel

    folder = resolve_controlnet_folder(name)
    dtype = resolve_dtype(dtype_choice, bridge.load_device(bridge.DENOISER))
    key = (str(folder), str(bridge.load_device(bridge.DENOISER)), dtype)
    if key not in _loaded:
        _read_json(folder / "config.json")
        module = _load_component(ControlNetModel, folder, dtype, "torch_dtype").eval().requires_grad_(False)
        managed = bridge.ManagedModule(module, bridge.DENOISER)
        if bridge.host_owns_models():
            return ControlNetHandle(name, module, managed.device, managed)
        _loaded[key] = ControlNetHandle(name, module, managed.device, managed)
        while len(_loaded) > CACHE_SIZE:
            _loaded.pop(next(iter(_loaded)))
    return _loaded[key]
