"""Finding and loading diffusers model folders into the pack's handles.

Weights load from safetensors; pickled weights (`.bin`, `.pth`, `.ckpt`) only through
`torch.load(weights_only=True)`, and a file that needs full unpickling is refused.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import torch

from . import bridge
from .builtin_models import BUILTIN_PREFIX, BUILTINS, builtin_names, ensure_builtin
from .errors import ModelLoadError
from .handles import UNET_2D, UNET_3D, ClipHandle, ModelHandle, VaeHandle

log = logging.getLogger(__name__)

UNET_KINDS = {"UNet3DConditionModel": UNET_3D, "UNet2DConditionModel": UNET_2D}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)
REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
CACHE_SIZE = 2  # enough for a two-model chain (zeroscope 576w -> XL)

_PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
_cache: OrderedDict[tuple, tuple[ModelHandle, ClipHandle, VaeHandle]] = OrderedDict()


def _scan(root: Path) -> list[str]:
    """Diffusers folders (a `model_index.json` inside) under `root`, as paths relative to it."""
    if not root.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "model_index.json" in filenames:
            found.append(Path(dirpath).relative_to(root).as_posix())
            dirnames.clear()
    return found


def available_models() -> list[str]:
    """`model_name` choices: the built-ins, then every diffusers folder (text2video folder wins a clash)."""
    names: dict[str, Path] = {}
    for _kind, root in bridge.model_roots():
        for name in _scan(root):
            names.setdefault(name, root)
    return builtin_names() + sorted(names)


def resolve_model_folder(name: str) -> Path:
    """The folder behind a `model_name`, confined to the models folders."""
    if name.startswith(BUILTIN_PREFIX):
        builtin = name[len(BUILTIN_PREFIX):]
        if builtin not in BUILTINS:
            raise ModelLoadError(f"unknown built-in model '{name}'; built-ins are {', '.join(builtin_names())}")
        return ensure_builtin(builtin, bridge.builtin_cache_dir())
    matches = []
    for _kind, root in bridge.model_roots():
        root = root.resolve()
        candidate = (root / name).resolve()
        if os.path.commonpath([root, candidate]) != str(root) or candidate == root:
            raise ModelLoadError(f"model name '{name}' points outside the models folder {root}")
        if (candidate / "model_index.json").is_file():
            matches.append(candidate)
    if not matches:
        folders = ", ".join(str(root) for _kind, root in bridge.model_roots())
        raise ModelLoadError(f"no model named '{name}': put a diffusers folder (with model_index.json) "
                             f"into one of {folders}")
    if len(matches) > 1:
        log.warning("model '%s' exists in %s and %s; using the first (text2video folder wins)",
                    name, matches[0], matches[1])
    return matches[0]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def _check_components(folder: Path) -> str:
    """Validate the folder's layout; return the UNet kind."""
    index = _read_json(folder / "model_index.json")
    if "text_encoder_2" in index:
        raise ModelLoadError(f"{folder.name}: SDXL models (two text encoders) are not supported yet")
    for component in REQUIRED_COMPONENTS:
        if not (folder / component).is_dir():
            raise ModelLoadError(f"{folder.name}: the folder has no '{component}' component "
                                 f"(a diffusers model needs {', '.join(REQUIRED_COMPONENTS)})")
    unet_class = _read_json(folder / "unet" / "config.json").get("_class_name")
    if unet_class not in UNET_KINDS:
        raise ModelLoadError(f"{folder.name}: its UNet is a {unet_class}; supported are "
                             f"{', '.join(UNET_KINDS)}")
    return UNET_KINDS[unet_class]


def _weight_files(component: Path) -> tuple[list[Path], list[Path]]:
    files = [p for p in component.iterdir() if p.is_file()]
    safetensors = [p for p in files if p.name.endswith(".safetensors")]
    pickles = [p for p in files if p.name.endswith(_PICKLE_SUFFIXES)]
    return safetensors, pickles


def load_pickled_weights(path: Path) -> dict:
    """A state dict from a pickle file, refusing anything but plain tensors and containers."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(
            f"{path.name}: refused, this pickle needs full unpickling, which can run arbitrary code. "
            f"Convert the weights to safetensors. ({str(exc).splitlines()[0]})") from exc
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _load_component(model_class, folder: Path, dtype: torch.dtype, dtype_kwarg: str):
    """One model component: safetensors through `from_pretrained`, else a weights-only pickle."""
    safetensors, pickles = _weight_files(folder)
    if safetensors:
        variant = None
        if not any(p.name.count(".") == 1 for p in safetensors) and any(".fp16." in p.name for p in safetensors):
            variant = "fp16"
        return model_class.from_pretrained(folder, use_safetensors=True, variant=variant, **{dtype_kwarg: dtype})
    if not pickles:
        raise ModelLoadError(f"{folder}: no weights (.safetensors or .bin) in this component folder")
    if len(pickles) > 1:
        raise ModelLoadError(f"{folder}: several pickled weight files; convert them to one safetensors file")
    state = load_pickled_weights(pickles[0])
    model = model_class.from_config(model_class.load_config(folder)) if hasattr(model_class, "load_config") \
        else model_class(model_class.config_class.from_pretrained(folder))
    model.load_state_dict(state, strict=True)
    return model.to(dtype)


def _transformers_dtype_kwarg() -> str:
    import transformers

    return "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    return bridge.auto_dtype(device) if choice == "auto" else DTYPES[choice]


def load_model(name: str, dtype_choice: str = "auto") -> tuple[ModelHandle, ClipHandle, VaeHandle]:
    """Load (or reuse from the process cache) the model, text encoder and VAE of `name`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    device = bridge.compute_device()
    dtype = resolve_dtype(dtype_choice, device)
    folder = resolve_model_folder(name)
    key = (str(folder), dtype, str(device))
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    kind = _check_components(folder)
    unet_class = UNet3DConditionModel if kind == UNET_3D else UNet2DConditionModel
    unet = _load_component(unet_class, folder / "unet", dtype, "torch_dtype")
    vae = _load_component(AutoencoderKL, folder / "vae", dtype, "torch_dtype")
    text_encoder = _load_component(CLIPTextModel, folder / "text_encoder", dtype, _transformers_dtype_kwarg())
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder.name}: cannot load its tokenizer: {exc}") from exc
    scheduler_config = dict(_read_json(folder / "scheduler" / "scheduler_config.json"))
    for module in (unet, vae, text_encoder):
        module.to(device).eval().requires_grad_(False)
    handles = (ModelHandle(name, unet, kind, scheduler_config, dtype, device),
               ClipHandle(name, tokenizer, text_encoder, device),
               VaeHandle(name, vae, device))
    _cache[key] = handles
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return handles


def clear_cache() -> None:
    _cache.clear()
