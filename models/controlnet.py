"""ControlNets: diffusers ControlNet folders (`config.json` + weights) in the controlnet models folder, and the
built-in `builtin:tiny-controlnet` for `builtin:tiny-sd15`."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .. import bridge
from ..errors import ModelLoadError
from .builtin import BUILTIN_PREFIX, RECIPE_VERSION, TEXT_WIDTH, _activate_zero_layers
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


def _is_controlnet(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("_class_name") == CONTROLNET_CLASS
    except (OSError, ValueError):
        return False


def available_controlnets() -> list[str]:
    """`controlnet_name` choices: the built-ins, then every ControlNet folder by its path relative to its root."""
    found = set()
    for root in bridge.controlnet_roots():
        if not root.is_dir():
            continue
        for dirpath, dirnames, _files in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if _is_controlnet(Path(dirpath)):
                found.add(Path(dirpath).relative_to(root).as_posix())
                dirnames.clear()
    return [BUILTIN_PREFIX + name for name in BUILTIN_CONTROLNETS] + sorted(found)


def _tiny_controlnet():
    from diffusers import ControlNetModel

    return ControlNetModel(
        in_channels=4, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8, conditioning_embedding_out_channels=(8, 8, 16, 16))


def _builtin_folder(name: str) -> Path:
    """The built-in ControlNet's folder, built on first use (its zero-initialised convolutions made non-zero)."""
    cache = bridge.builtin_cache_dir()
    folder = cache / f"{name}-v{RECIPE_VERSION}"
    if (folder / "config.json").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RECIPE_VERSION)
            model = _tiny_controlnet()
            _activate_zero_layers(model)
        model.save_pretrained(staging, safe_serialization=True)
        os.replace(staging, folder)
    except OSError:
        if not (folder / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def resolve_controlnet_folder(name: str) -> Path:
    if name.startswith(BUILTIN_PREFIX):
        builtin = name[len(BUILTIN_PREFIX):]
        if builtin not in BUILTIN_CONTROLNETS:
            raise ModelLoadError(f"unknown built-in ControlNet '{name}'; built-ins are "
                                 f"{', '.join(BUILTIN_PREFIX + n for n in BUILTIN_CONTROLNETS)}")
        return _builtin_folder(builtin)
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts or Path(name).drive:
        raise ModelLoadError(f"ControlNet name '{name}' points outside the controlnet folder: use a path relative "
                             "to models/controlnet")
    for root in bridge.controlnet_roots():
        if _is_controlnet(root / name):
            return root / name
    folders = ", ".join(str(root) for root in bridge.controlnet_roots())
    raise ModelLoadError(f"no ControlNet named '{name}': put a diffusers ControlNet folder (config.json with "
                         f"_class_name {CONTROLNET_CLASS}, and its weights) into {folders}")


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
