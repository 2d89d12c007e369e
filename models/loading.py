"""Finding and loading diffusers model folders into the pack's handles.

Weights load from safetensors; pickled weights (`.bin`, `.pth`, `.ckpt`) only through
`torch.load(weights_only=True)`, and a file that needs full unpickling is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import pickle
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from .. import bridge
from .builtin import BUILTIN_PREFIX, BUILTINS, builtin_names, ensure_builtin
from ..errors import ModelLoadError
from .families import ModelFamily, family_of
from .handles import ClipHandle, ModelHandle, TextEncoder, VaeHandle

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)
CACHE_SIZE = 2  # enough for a two-model chain (zeroscope 576w -> XL)

_PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
_HAS_ACCELERATE = importlib.util.find_spec("accelerate") is not None


def _scan(root: Path) -> list[str]:
    """Diffusers folders (a `model_index.json` inside) under `root`, as paths relative to it.

    Linked folders are followed (models linked in from a shared disk), each real folder once, so links that
    loop back (`a -> .`) end the walk instead of sending it round for ever.
    """
    if not root.is_dir():
        return []
    found = []
    seen = {_folder_identity(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in sorted(dirnames) if not d.startswith(".") and _first_visit(Path(dirpath, d), seen)]
        if "model_index.json" in filenames:
            found.append(Path(dirpath).relative_to(root).as_posix())
            dirnames.clear()
    return found


def _folder_identity(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:  # a dangling or looping link
        return None
    return status.st_dev, status.st_ino


def _first_visit(path: Path, seen: set) -> bool:
    identity = _folder_identity(path)
    if identity is None or identity in seen:
        return False
    seen.add(identity)
    return True


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
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts or Path(name).drive:
        raise ModelLoadError(f"model name '{name}' points outside the models folder: use a path relative to "
                             "models/text2video or models/diffusers")
    # A name is confined by its parts, not by where links lead: a model folder linked in from elsewhere
    # (a shared disk) is listed and loaded like any other, as ComfyUI does with its model folders.
    matches = [root / name for _kind, root in bridge.model_roots() if (root / name / "model_index.json").is_file()]
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


def _check_components(folder: Path) -> ModelFamily:
    """Recognise the folder's model family and check it has every component the family needs."""
    if not (folder / "unet").is_dir():
        raise ModelLoadError(f"{folder.name}: the folder has no 'unet' component")
    family = family_of(folder.name, _read_json(folder / "model_index.json"),
                       _read_json(folder / "unet" / "config.json"))
    for component in family.components:
        if not (folder / component).is_dir():
            raise ModelLoadError(f"{folder.name}: the folder has no '{component}' component (a "
                                 f"{family.description} model needs {', '.join(family.components)})")
    return family


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
    """One model component: safetensors through `from_pretrained` (straight into empty modules when accelerate is
    installed), else a weights-only pickle."""
    safetensors, pickles = _weight_files(folder)
    if safetensors:
        variant = None
        if not any(p.name.count(".") == 1 for p in safetensors) and any(".fp16." in p.name for p in safetensors):
            variant = "fp16"
        return model_class.from_pretrained(folder, use_safetensors=True, variant=variant, **{dtype_kwarg: dtype},
                                           **_lean_loading(model_class))
    if not pickles:
        raise ModelLoadError(f"{folder}: no weights (.safetensors or .bin) in this component folder")
    if len(pickles) > 1:
        raise ModelLoadError(f"{folder}: several pickled weight files; convert them to one safetensors file")
    state = load_pickled_weights(pickles[0])
    with _empty_weights():
        model = model_class.from_config(model_class.load_config(folder)) if hasattr(model_class, "load_config") \
            else model_class(model_class.config_class.from_pretrained(folder))
    model.load_state_dict(state, strict=True, assign=_HAS_ACCELERATE)
    return model.to(dtype)


def _empty_weights():
    """Build modules without initialising their weights (accelerate's meta device), so that loaded weights
    go straight in instead of replacing a random initialisation; plain construction without accelerate."""
    if not _HAS_ACCELERATE:
        return contextlib.nullcontext()
    from accelerate import init_empty_weights

    return init_empty_weights()


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def _transformers_dtype_kwarg() -> str:
    return "dtype" if _transformers_major() >= 5 else "torch_dtype"


def _lean_loading(model_class) -> dict:
    """`from_pretrained` arguments that load into empty modules: diffusers does so by itself when accelerate is
    installed, transformers 5 always; transformers 4 has to be asked."""
    if model_class.__module__.startswith("transformers") and _transformers_major() < 5 and _HAS_ACCELERATE:
        return {"low_cpu_mem_usage": True}
    return {}


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    return bridge.auto_dtype(device) if choice == "auto" else DTYPES[choice]


@dataclasses.dataclass(frozen=True)
class _ModelInfo:
    """What the handles of a loaded model need besides its weights."""

    family: ModelFamily
    scheduler_config: dict
    tokenizers: tuple[Any, ...]  # one per text encoder of the family

    @property
    def roles(self) -> dict[str, str]:
        """The model's weight components (folder names) and the role each plays for the host."""
        text = {slot.encoder: bridge.TEXT_ENCODER for slot in self.family.text_encoders}
        return {"unet": bridge.DENOISER, **text, "vae": bridge.VAE}


Components = dict[str, bridge.ManagedModule]
"""A loaded model's weights by component folder (`unet`, `text_encoder`, `text_encoder_2`, `vae`)."""


class _ModelCache:
    """Loaded models by folder, device and dtypes, so a model loaded twice (also as `auto` and as the dtype
    `auto` picks) is loaded once.

    Headless: the last `CACHE_SIZE` models. Inside ComfyUI: weak references to the components only, one by one.
    ComfyUI's execution cache holds the handles it passes between nodes, so a component still in use somewhere
    (say a patched clone of the UNet) is found again instead of loaded twice, while `POST /free` (which drops
    that cache and unloads the models) really gives the memory back.
    """

    def __init__(self):
        self._recent: OrderedDict[tuple, tuple[_ModelInfo, Components]] = OrderedDict()
        self._weak: dict[tuple, tuple[_ModelInfo, dict[str, weakref.ref]]] = {}

    def lookup(self, key: tuple) -> tuple[_ModelInfo | None, Components]:
        """The model's info and whichever of its components are still loaded."""
        if key in self._recent:
            self._recent.move_to_end(key)
            info, components = self._recent[key]
            return info, dict(components)
        if key in self._weak:
            info, refs = self._weak[key]
            alive = {role: ref() for role, ref in refs.items()}
            return info, {role: component for role, component in alive.items() if component is not None}
        return None, {}

    def store(self, key: tuple, info: _ModelInfo, components: Components) -> None:
        if bridge.host_owns_models():
            self._weak[key] = (info, {role: weakref.ref(component) for role, component in components.items()})
            return
        self._recent[key] = (info, components)
        self._recent.move_to_end(key)
        while len(self._recent) > CACHE_SIZE:
            self._recent.popitem(last=False)

    def clear(self) -> None:
        self._recent.clear()
        self._weak.clear()


_cache = _ModelCache()


def _read_info(folder: Path) -> _ModelInfo:
    import transformers

    family = _check_components(folder)
    tokenizers = []
    for slot in family.text_encoders:
        try:
            tokenizers.append(getattr(transformers, slot.processor_class).from_pretrained(folder / slot.tokenizer))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{folder.name}: cannot load its {slot.tokenizer}: {exc}") from exc
    scheduler_config = dict(_read_json(folder / "scheduler" / "scheduler_config.json"))
    return _ModelInfo(family, scheduler_config, tuple(tokenizers))


def _load_part(component: str, folder: Path, family: ModelFamily, dtype: torch.dtype) -> torch.nn.Module:
    """The weight component `component` (a folder name), in eval mode without gradients."""
    import diffusers
    import transformers

    if component == "unet":
        module = _load_component(getattr(diffusers, family.unet_class), folder / "unet", dtype, "torch_dtype")
    elif component == "vae":
        module = _load_component(getattr(diffusers, family.vae_class), folder / "vae", dtype, "torch_dtype")
    else:
        slot = next(slot for slot in family.text_encoders if slot.encoder == component)
        module = _load_component(getattr(transformers, slot.encoder_class), folder / component, dtype,
                                 _transformers_dtype_kwarg())
    return module.eval().requires_grad_(False)


def load_model(name: str, dtype_choice: str = "auto") -> tuple[ModelHandle, ClipHandle, VaeHandle]:
    """Load (or reuse from the process cache) the model, text encoder and VAE of `name`.

    `auto` picks each component's precision for the device it computes on. The components are handed to the
    host's memory management (`bridge.ManagedModule`): the handles load them for use right before they run.
    """
    folder = resolve_model_folder(name)
    dtypes = {role: resolve_dtype(dtype_choice, bridge.load_device(role)) for role in bridge.ROLES}
    if dtype_choice == "auto" and _read_json(folder / "vae" / "config.json").get("force_upcast", True):
        dtypes[bridge.VAE] = torch.float32  # it would be upcast for every encode and decode anyway
    key = (str(folder), str(bridge.load_device(bridge.DENOISER)), *dtypes.values(), bridge.sequential_offload())
    info, components = _cache.lookup(key)
    if info is None:
        info = _read_info(folder)
    for component, role in info.roles.items():
        if component not in components:
            components[component] = bridge.ManagedModule(_load_part(component, folder, info.family, dtypes[role]),
                                                          role)
    _cache.store(key, info, components)
    unet, vae = components["unet"], components["vae"]
    text = [components[slot.encoder] for slot in info.family.text_encoders]
    vae_handle = VaeHandle(name, vae.module, vae.device, managed=vae, temporal=info.family.temporal_vae)
    more = tuple(TextEncoder(tokenizer, encoder.module, encoder) for tokenizer, encoder in
                 zip(info.tokenizers[1:], text[1:]))
    return (ModelHandle(name, unet.module, info.family, info.scheduler_config, unet.module.dtype, unet.device,
                        float(vae.module.config.scaling_factor), vae_handle.spatial_scale, managed=unet),
            ClipHandle(name, info.tokenizers[0], text[0].module, text[0].device, managed=text[0],
                       family=info.family, more_encoders=more),
            vae_handle)


def clear_cache() -> None:
    _cache.clear()
