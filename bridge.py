"""The one module that knows about ComfyUI.

Inside ComfyUI it delegates to `comfy.model_management`, `comfy.model_patcher`,
`comfy.utils` and `folder_paths`; outside (the headless runner, tests, scripts) it
falls back to plain behaviour: torch's device pick, models that simply stay on the
compute device, tqdm progress on stderr, a SIGINT flag for interrupts, and a
per-user data folder with ComfyUI's layout.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from pathlib import Path

import torch

try:  # pragma: no cover - exercised by the ComfyUI integration tests
    import comfy.model_management as _comfy_mm
    import comfy.model_patcher as _comfy_patcher
    import comfy.utils as _comfy_utils
    import folder_paths as _folder_paths

    IN_COMFYUI = True
except ImportError:
    _comfy_mm = _comfy_patcher = _comfy_utils = _folder_paths = None
    IN_COMFYUI = False

MODEL_FOLDER = "text2video"
"""The pack's own models folder (beside ComfyUI's `diffusers` folder)."""

DIFFUSERS_FOLDER = "diffusers"
DEFAULT_PREVIEW_SIZE = 512

_folder_overrides: dict[str, Path] = {}
_device_override: torch.device | None = None
_sequential_offload = False
_interrupt_requested = threading.Event()


# --------------------------------------------------------------------------- folders


def default_data_root() -> Path:
    """Root of the headless folders: `$T2V_DATA_DIR` or a per-user data folder."""
    env = os.environ.get("T2V_DATA_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "comfyui-text2video"


def set_folders(models: str | Path | None = None, input: str | Path | None = None,
                output: str | Path | None = None) -> None:
    """Override single headless folders (the runner's --models-dir/--input-dir/--output-dir)."""
    for key, value in (("models", models), ("input", input), ("output", output)):
        if value is not None:
            _folder_overrides[key] = Path(value).expanduser().resolve()


def reset_folders() -> None:
    _folder_overrides.clear()


def _headless_folder(key: str) -> Path:
    return _folder_overrides.get(key) or (default_data_root() / key)


def model_roots() -> list[tuple[str, Path]]:
    """Folders that hold diffusers model folders, as `(folder_kind, path)`, text2video first."""
    if IN_COMFYUI:
        roots = [(kind, Path(p)) for kind in (MODEL_FOLDER, DIFFUSERS_FOLDER)
                 for p in _folder_paths.get_folder_paths(kind)]
    else:
        models = _headless_folder("models")
        roots = [(MODEL_FOLDER, models / MODEL_FOLDER), (DIFFUSERS_FOLDER, models / DIFFUSERS_FOLDER)]
    return roots


CONTROLNET_FOLDER = "controlnet"


def controlnet_roots() -> list[Path]:
    """Folders that hold ControlNets: ComfyUI's `models/controlnet` (headless: `<data>/models/controlnet`)."""
    if IN_COMFYUI:
        return [Path(p) for p in _folder_paths.get_folder_paths(CONTROLNET_FOLDER)]
    return [_headless_folder("models") / CONTROLNET_FOLDER]


MOTION_ADAPTER_FOLDER = "animatediff_models"
"""AnimateDiff-Evolved's folder name for motion modules, so both packs share one folder."""


def motion_adapter_roots() -> list[Path]:
    """Folders that hold motion adapters: ComfyUI's `models/animatediff_models` (headless:
    `<data>/models/animatediff_models`)."""
    if IN_COMFYUI:
        return [Path(p) for p in _folder_paths.get_folder_paths(MOTION_ADAPTER_FOLDER)]
    return [_headless_folder("models") / MOTION_ADAPTER_FOLDER]


def builtin_cache_dir() -> Path:
    """Writable cache for the built-in tiny models, inside the pack's models folder."""
    return model_roots()[0][1] / ".builtin"


def input_directory() -> Path:
    if IN_COMFYUI:
        return Path(_folder_paths.get_input_directory())
    return _headless_folder("input")


def output_directory() -> Path:
    if IN_COMFYUI:
        return Path(_folder_paths.get_output_directory())
    return _headless_folder("output")


def metadata_enabled() -> bool:
    """Whether saved files may embed the workflow (ComfyUI's `--disable-metadata` turns it off)."""
    if IN_COMFYUI:  # pragma: no cover - ComfyUI only
        from comfy.cli_args import args

        return not args.disable_metadata
    return True


def _register_comfyui_folders() -> None:  # pragma: no cover - ComfyUI only
    """Register `models/text2video` first among the folder's paths (extra_model_paths.yaml may add more):
    the built-in models are cached in the first one, ComfyUI's own writable models folder."""
    _folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(_folder_paths.models_dir, MODEL_FOLDER),
                                        is_default=True)
    _folder_paths.add_model_folder_path(MOTION_ADAPTER_FOLDER,  # shared with AnimateDiff-Evolved, which may add it too
                                        os.path.join(_folder_paths.models_dir, MOTION_ADAPTER_FOLDER))


if IN_COMFYUI:  # pragma: no cover
    _register_comfyui_folders()


def add_json_route(path: str, handler) -> None:
    """Answer `GET path` on ComfyUI's server with `handler(query: dict) -> (HTTP status, JSON payload)`,
    run in a worker thread (the editor extension's requests). Outside ComfyUI there is no server: nothing happens."""
    if not IN_COMFYUI:
        return
    import asyncio

    from aiohttp import web

    # ComfyUI's modules without its server (its unit tests, scripts): `server` is not imported, or has no
    # instance. Importing it here could fail in such a script (its `utils` package shadowed), so it is not.
    PromptServer = getattr(sys.modules.get("server"), "PromptServer", None)
    if getattr(PromptServer, "instance", None) is None:
        return

    async def respond(request):
        status, payload = await asyncio.to_thread(handler, dict(request.rel_url.query))
        return web.json_response(payload, status=status)

    PromptServer.instance.routes.get(path)(respond)


def video_components(value) -> tuple[torch.Tensor, float] | None:
    """`(frames, fps)` of a core ComfyUI `VIDEO` (LoadVideo's, CreateVideo's: anything with
    `get_components()`), or None for anything else. Duck-typed: `comfy_api` cannot be imported without ComfyUI."""
    get_components = getattr(value, "get_components", None)
    if not callable(get_components):
        return None
    components = get_components()
    return components.images, float(components.frame_rate)


# --------------------------------------------------------------------------- devices


def set_device(name: str) -> None:
    """Force the compute device (`auto`, `cpu`, `cuda`, `cuda:1`, ...) outside ComfyUI."""
    global _device_override
    _device_override = None if name == "auto" else torch.device(name)


def compute_device() -> torch.device:
    """The device models run on."""
    if IN_COMFYUI:
        return _comfy_mm.get_torch_device()
    if _device_override is not None:
        return _device_override
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    """Where `IMAGE` tensors live between nodes (ComfyUI's convention)."""
    if IN_COMFYUI:
        return _comfy_mm.intermediate_device()
    return torch.device("cpu")


def auto_dtype(device: torch.device) -> torch.dtype:
    """The weight dtype for `dtype = auto`: half precision on GPUs that do it well, else float32.

    In ComfyUI its own policy decides (float16, else bfloat16 where that is the fast half type).
    """
    if IN_COMFYUI:
        if _comfy_mm.should_use_fp16(device):
            return torch.float16
        return torch.bfloat16 if _comfy_mm.should_use_bf16(device) else torch.float32
    return torch.float16 if device.type == "cuda" else torch.float32


def soft_empty_cache() -> None:
    """Give cached allocator memory back after a large step."""
    if IN_COMFYUI:
        _comfy_mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- model management

DENOISER = "denoiser"
TEXT_ENCODER = "text_encoder"
VAE = "vae"
ROLES = (DENOISER, TEXT_ENCODER, VAE)
"""What a model component is for: ComfyUI picks its devices by role."""


def load_device(role: str) -> torch.device:
    """Where a component of `role` computes (ComfyUI may keep text encoders or VAEs on the CPU)."""
    if IN_COMFYUI:
        return {DENOISER: _comfy_mm.get_torch_device, TEXT_ENCODER: _comfy_mm.text_encoder_device,
                VAE: _comfy_mm.vae_device}[role]()
    return compute_device()


def offload_device(role: str) -> torch.device:
    """Where a component of `role` waits while it is not in use (headless: where it computes)."""
    if IN_COMFYUI:
        return {DENOISER: _comfy_mm.unet_offload_device, TEXT_ENCODER: _comfy_mm.text_encoder_offload_device,
                VAE: _comfy_mm.vae_offload_device}[role]()
    return compute_device()


class _ModuleHolder(torch.nn.Module):
    """A plain module around a diffusers/transformers model, for ComfyUI's `ModelPatcher`.

    The patcher sets `.device` on the module it manages, which diffusers models refuse (a read-only property).
    """

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner


@functools.cache
def _holder_class(inner_class_name: str) -> type:
    """A holder subclass named after the model class, so ComfyUI's log says what it loads ("T2VUNet3DConditionModel")."""
    return type(f"T2V{inner_class_name}", (_ModuleHolder,), {})


class ManagedModule:
    """A model component under the host's memory management.

    Inside ComfyUI the module is wrapped in a `ModelPatcher`: it waits on the offload device, `load_for_use`
    moves it to `device` right before it runs, ComfyUI offloads it under memory pressure, and `POST /free`
    unloads it. Headless it simply sits on `device`. `device` is always where the module computes.
    """

    def __init__(self, module: torch.nn.Module, role: str):
        if role not in ROLES:
            raise ValueError(f"unknown model role {role!r}; expected one of {', '.join(ROLES)}")
        self.module = module
        self.role = role
        self.device = load_device(role)
        self.patcher = None
        if sequential_offload():
            from accelerate import cpu_offload

            cpu_offload(module.to("cpu"), execution_device=self.device)
        else:
            module.to(offload_device(role))
        if IN_COMFYUI:
            holder = _holder_class(type(module).__name__)(module)
            self.patcher = _comfy_patcher.ModelPatcher(holder, load_device=self.device,
                                                       offload_device=offload_device(role))

    def load_for_use(self) -> None:
        """Bring the weights onto `device`, right before the module runs.

        In ComfyUI this is `load_models_gpu` (which first offloads other models if memory is short), loading
        every weight: diffusers modules cannot run partially loaded. Headless the module is already in place.
        """
        if self.patcher is not None:
            _comfy_mm.load_models_gpu([self.patcher], force_full_load=True)


def set_sequential_offload(enabled: bool) -> None:
    """Headless: keep the weights of models loaded from now on in CPU memory and move each layer to the compute
    device only while it runs (accelerate's `cpu_offload`): slow, but a GPU with little memory holds one layer at a
    time. Inside ComfyUI its own model management offloads, and this has no effect."""
    global _sequential_offload
    _sequential_offload = bool(enabled)


def sequential_offload() -> bool:
    return _sequential_offload and not IN_COMFYUI


def host_owns_models() -> bool:
    """Whether a host (ComfyUI) decides how long models stay loaded.

    Then the pack's model cache keeps only weak references, so that ComfyUI's execution cache and `POST /free`
    alone decide when a model's memory is given back.
    """
    return IN_COMFYUI


# --------------------------------------------------------------------------- core models (ComfyUI's MODEL)

CORE_SAMPLERS_OUTSIDE_COMFYUI = ["euler", "ddim", "dpmpp_2m", "uni_pc"]
CORE_SCHEDULERS_OUTSIDE_COMFYUI = ["normal", "karras", "simple"]


def _class_names(obj) -> set[str]:
    return {cls.__name__ for cls in type(obj).__mro__}


def core_model_problem(model) -> str | None:
    """Why `model` is not a core `MODEL` with a Stable Diffusion UNet in sigma (eps/v) space, or None.

    Read by class names, so it needs no ComfyUI import: `UNetModel` is ComfyUI's SD 1.x/2.x/SDXL UNet, and
    the `EPS` family (eps, v-prediction) puts noisy latents at `x0 + sigma * noise`.
    """
    if not all(hasattr(model, name) for name in ("clone", "set_model_attn1_patch", "get_model_object")):
        return (f"expected a core MODEL (from CheckpointLoaderSimple, UNETLoader, a LoRA loader...), got "
                f"{type(model).__name__}; the pack's own T2V_MODEL takes T2VCrossFrameAttention instead")
    unet = model.get_model_object("diffusion_model")
    if "UNetModel" not in _class_names(unet):
        return (f"its diffusion model is a {type(unet).__name__}; Text2Video-Zero needs a Stable Diffusion "
                "1.x/2.x/SDXL UNet")
    if "EPS" not in _class_names(model.get_model_object("model_sampling")):
        return "its sampling is not eps or v-prediction (a flow model?); Text2Video-Zero needs an SD-style model"
    return None


def core_model_with_attn1_patch(model, patch):
    """A clone of the core `ModelPatcher` with `patch` added to every transformer block's self-attention.

    The clone deep-copies the model options, so the input model (and every other branch using it) never
    sees the patch; LoRAs and other patches on either side of the clone carry over as usual.
    """
    patched = model.clone()
    patched.set_model_attn1_patch(patch)
    return patched


CALC_COND_BATCH_WRAPPER = "calc_cond_batch"
"""ComfyUI's `comfy.patcher_extension.WrappersMP.CALC_COND_BATCH`: wraps each batch of model calls of a step."""


def core_model_with_controlnet_attn1_hook(model, make_hook):
    """`model` (a clone) with `make_hook(frames)` installed as a forward pre-hook on the self-attention of every
    core ControlNet its conditionings carry, for each batch of model calls and removed right after.

    Core ControlNets run their blocks without the model's patches (no `transformer_options` reach them), so a
    `calc_cond_batch` wrapper on this model installs the hook instead; `frames` is the latent batch, of which
    each guidance branch is one copy. Nothing stays installed, and other models using the same ControlNet
    never see the hook.
    """
    def with_hooked_controlnets(executor, base_model, conds, x_in, timestep, model_options):
        hook = make_hook(x_in.shape[0])
        handles = [attention.register_forward_pre_hook(hook, with_kwargs=True)
                   for attention in _controlnet_self_attentions(conds)]
        try:
            return executor(base_model, conds, x_in, timestep, model_options)
        finally:
            for handle in handles:
                handle.remove()

    model.add_wrapper_with_key(CALC_COND_BATCH_WRAPPER, "comfyui-text2video.cross-frame-controlnet",
                               with_hooked_controlnets)
    return model


def _controlnet_self_attentions(conds) -> list[torch.nn.Module]:
    """The transformer blocks' self-attention modules of every ControlNet in `conds` (chained ones too)."""
    control_models, seen = [], set()
    for cond_list in conds:
        for cond in cond_list or []:
            control = cond.get("control")
            while control is not None and id(control) not in seen:
                seen.add(id(control))
                module = getattr(control, "control_model", None)
                if isinstance(module, torch.nn.Module) and all(module is not m for m in control_models):
                    control_models.append(module)
                control = getattr(control, "previous_controlnet", None)
    return [block.attn1 for module in control_models for block in module.modules()
            if type(block).__name__ == "BasicTransformerBlock" and isinstance(getattr(block, "attn1", None),
                                                                              torch.nn.Module)]


def core_sampler_choices() -> tuple[list[str], list[str]]:
    """Core KSampler's `sampler_name` and `scheduler` choices (outside ComfyUI, where no MODEL exists, a few)."""
    if IN_COMFYUI:
        from comfy.samplers import KSampler

        return list(KSampler.SAMPLERS), list(KSampler.SCHEDULERS)
    return list(CORE_SAMPLERS_OUTSIDE_COMFYUI), list(CORE_SCHEDULERS_OUTSIDE_COMFYUI)


def core_sigmas(model, steps: int, sampler_name: str, scheduler: str) -> torch.Tensor:
    """The sigmas core KSampler and KSamplerAdvanced step through for these settings (on the CPU)."""
    if not IN_COMFYUI:
        raise RuntimeError("core MODELs and their sigmas exist only inside ComfyUI")
    from comfy.samplers import KSampler

    return KSampler(model, steps, "cpu", sampler_name, scheduler, denoise=1.0).sigmas.cpu()


def core_latent_format(model):
    """The model's latent format: `process_in` (LATENT -> model space) and `process_out` (back)."""
    return model.get_model_object("latent_format")


# --------------------------------------------------------------------------- progress and interrupts


def request_interrupt() -> None:
    """Ask the running node to stop at its next step (the runner's SIGINT handler)."""
    _interrupt_requested.set()


def clear_interrupt() -> None:
    _interrupt_requested.clear()


def check_interrupt() -> None:
    """Raise if the user asked to stop: ComfyUI's interrupt, or KeyboardInterrupt headless."""
    if IN_COMFYUI:
        _comfy_mm.throw_exception_if_processing_interrupted()
    elif _interrupt_requested.is_set():
        _interrupt_requested.clear()
        raise KeyboardInterrupt("interrupted")


def shows_previews() -> bool:
    """Whether progress updates carry a latent preview: in ComfyUI, unless its `--preview-method` is `none`
    (its default); never headless (a terminal cannot show one)."""
    if IN_COMFYUI:
        from comfy.cli_args import LatentPreviewMethod, args

        return args.preview_method != LatentPreviewMethod.NoPreviews
    return False


def preview_size() -> int:
    """The largest side of a latent preview in pixels (ComfyUI's `--preview-size`)."""
    if IN_COMFYUI:
        from comfy.cli_args import args

        return args.preview_size
    return DEFAULT_PREVIEW_SIZE


class Progress:
    """A step counter shown in ComfyUI's editor, or as a tqdm bar on stderr headless."""

    def __init__(self, total: int, description: str = ""):
        self.total = max(int(total), 1)
        if IN_COMFYUI:
            self._bar = _comfy_utils.ProgressBar(self.total)
        else:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=description, file=sys.stderr, leave=False,
                             disable=os.environ.get("T2V_NO_PROGRESS") == "1")

    def update(self, done: int, preview=None) -> None:
        """Set the counter to `done` steps (and, in ComfyUI, show `preview`, a PIL image)."""
        if IN_COMFYUI:
            preview_arg = ("JPEG", preview, preview_size()) if preview is not None else None
            self._bar.update_absolute(done, self.total, preview_arg)
        else:
            self._bar.n = done
            self._bar.refresh()

    def close(self) -> None:
        if not IN_COMFYUI:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
