"""AnimateDiff motion adapters: diffusers `MotionAdapter` folders (`config.json` + weights) in the motion models
folder, the built-in `builtin:tiny-motion-adapter` for `builtin:tiny-sd15`, and the motion UNet they make of a
Stable Diffusion UNet (what diffusers' `UNetMotionModel.from_unet2d` builds, sharing the UNet's weights)."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import torch

from .. import bridge
from .builtin import RECIPE_VERSION, _activate_zero_layers, build_once
from .component_folders import ComponentKind
from .families.animatediff import ANIMATEDIFF
from .families.sd import STABLE_DIFFUSION
from .handles import ModelHandle, _Managed
from .loading import _load_component, resolve_dtype

ADAPTER_CLASS = "MotionAdapter"
BUILTIN_ADAPTERS = {"tiny-motion-adapter": "builtin:tiny-sd15"}
"""Built-in motion adapters and the built-in model each fits."""


@dataclasses.dataclass(frozen=True)
class MotionAdapterHandle(_Managed):
    """`T2V_MOTION_ADAPTER`: a diffusers `MotionAdapter` (the temporal modules of AnimateDiff)."""

    name: str
    module: torch.nn.Module
    device: torch.device
    managed: bridge.ManagedModule | None = None


def _build_tiny_adapter(folder: Path) -> None:
    from diffusers import MotionAdapter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RECIPE_VERSION)
        adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=4,
                                motion_norm_num_groups=8, motion_max_seq_length=32)
        _activate_zero_layers(adapter)
    adapter.save_pretrained(folder, safe_serialization=True)


MOTION_ADAPTERS = ComponentKind(
    noun="motion adapter", class_name=ADAPTER_CLASS, diffusers_name="MotionAdapter",
    folder_phrase="the motion models folder", relative_to=f"models/{bridge.MOTION_ADAPTER_FOLDER}",
    roots=lambda: bridge.motion_adapter_roots(), builtins=BUILTIN_ADAPTERS,
    build_builtin=lambda name: build_once(bridge.builtin_cache_dir(), name, "config.json", _build_tiny_adapter))
available_motion_adapters = MOTION_ADAPTERS.available
resolve_motion_adapter_folder = MOTION_ADAPTERS.resolve


_loaded: dict[tuple, MotionAdapterHandle] = {}
CACHE_SIZE = 2


def load_motion_adapter(name: str) -> MotionAdapterHandle:
    """Load (or reuse) the motion adapter `name` under the host's memory management, in the denoiser's precision."""
    from diffusers import MotionAdapter

    folder = resolve_motion_adapter_folder(name)
    device = bridge.load_device(bridge.DENOISER)
    key = (str(folder), str(device), resolve_dtype("auto", device))
    if key not in _loaded:
        module = _load_component(MotionAdapter, folder, key[2], "torch_dtype").eval().requires_grad_(False)
        managed = bridge.ManagedModule(module, bridge.DENOISER)
        handle = MotionAdapterHandle(name, module, managed.device, managed)
        if bridge.host_owns_models():
            return handle
        _loaded[key] = handle
        while len(_loaded) > CACHE_SIZE:
            _loaded.pop(next(iter(_loaded)))
    return _loaded[key]


def adapter_problem(model: ModelHandle, adapter: MotionAdapterHandle) -> str | None:
    """Why `adapter` cannot animate `model`, or None."""
    if model.family is ANIMATEDIFF:
        return f"'{model.name}' already has a motion adapter; apply one to the Stable Diffusion model itself"
    if model.family is not STABLE_DIFFUSION:
        hint = " (AnimateDiff SDXL adapters are not supported yet)" if model.family.name == "sdxl" else ""
        return (f"'{model.name}' is a {model.family.description} model; motion adapters animate Stable Diffusion "
                f"1.x models{hint}: load one, e.g. stable-diffusion-v1-5")
    ours, theirs = model.unet.config, adapter.module.config
    if theirs.conv_in_channels:
        return f"'{adapter.name}' is a PIA adapter (its own input convolution); use an AnimateDiff motion adapter"
    if tuple(ours.block_out_channels) != tuple(theirs.block_out_channels):
        return (f"'{adapter.name}' has block_out_channels {tuple(theirs.block_out_channels)} but the model "
                f"'{model.name}' has {tuple(ours.block_out_channels)}; use an adapter made for this model")
    layers = [ours.layers_per_block] * len(ours.block_out_channels) if isinstance(ours.layers_per_block, int) \
        else list(ours.layers_per_block)
    adapter_layers = [theirs.motion_layers_per_block] * len(theirs.block_out_channels) \
        if isinstance(theirs.motion_layers_per_block, int) else list(theirs.motion_layers_per_block)
    if layers != adapter_layers:
        return (f"'{adapter.name}' has {adapter_layers} motion layers per block but the model '{model.name}' has "
                f"{layers} layers per block; use an adapter made for this model")
    return None


def motion_unet_config(unet_config, adapter_config) -> dict:
    """The `UNetMotionModel` config for a 2D UNet and an adapter: motion block types, the adapter's motion settings."""
    from diffusers import UNetMotionModel

    config = {key: value for key, value in dict(unet_config).items() if not key.startswith("_")}
    config["down_block_types"] = ["CrossAttnDownBlockMotion" if "CrossAttn" in kind else "DownBlockMotion"
                                  for kind in config["down_block_types"]]
    config["up_block_types"] = ["CrossAttnUpBlockMotion" if "CrossAttn" in kind else "UpBlockMotion"
                                for kind in config["up_block_types"]]
    config.update(layers_per_block=adapter_config.motion_layers_per_block,
                  motion_num_attention_heads=adapter_config.motion_num_attention_heads,
                  motion_max_seq_length=adapter_config.motion_max_seq_length,
                  use_motion_mid_block=adapter_config.use_motion_mid_block,
                  temporal_transformer_layers_per_block=adapter_config.motion_transformer_layers_per_block,
                  temporal_transformer_layers_per_mid_block=adapter_config.motion_transformer_layers_per_mid_block)
    if not config.get("num_attention_heads"):  # SD 1.x configs name their head count attention_head_dim
        config["num_attention_heads"] = config["attention_head_dim"]
    accepted = inspect.signature(UNetMotionModel.__init__).parameters
    return {key: value for key, value in config.items() if key in accepted}


class _MotionWeights:
    """The host's memory management of a motion UNet: its weights are the UNet's and the adapter's, loaded for use
    through their own managers; its few own tensors (positional tables) then follow them onto the device."""

    def __init__(self, module: torch.nn.Module, parts: tuple, device: torch.device):
        self.module = module
        self.parts = parts
        self.device = device

    def load_for_use(self) -> None:
        for part in self.parts:
            part.load_for_use()
        self.module.to(self.device)


def animated(model: ModelHandle, adapter: MotionAdapterHandle) -> ModelHandle:
    """A copy of `model` whose denoiser is the motion UNet of its UNet and `adapter` (call `adapter_problem` first).

    The motion UNet is built without weights of its own and takes the UNet's and the adapter's tensors as they are
    (converted only if the adapter's precision differs): the original model is untouched and nothing is copied.
    """
    from diffusers import UNetMotionModel

    model.load_for_use()
    adapter.load_for_use()
    with torch.device("meta"):
        motion = UNetMotionModel.from_config(motion_unet_config(model.unet.config, adapter.module.config))
    adapter_state = adapter.module.state_dict(keep_vars=True)
    if adapter.module.dtype != model.dtype:
        adapter_state = {key: value.to(model.dtype) for key, value in adapter_state.items()}
    motion.load_state_dict({**model.unet.state_dict(keep_vars=True), **adapter_state}, strict=True, assign=True)
    motion.eval().requires_grad_(False)
    parts = tuple(managed for managed in (model.managed, adapter.managed) if managed is not None)
    return dataclasses.replace(model, name=f"{model.name} + {adapter.name}", unet=motion, family=ANIMATEDIFF,
                               managed=_MotionWeights(motion, parts, model.device))
