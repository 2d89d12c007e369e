"""Small helpers the node classes share: latent and conditioning checks, progress with interrupts."""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch

from .. import bridge
from ..attention.feed_forward import FeedForwardChunking
from ..errors import NodeInputError, NodeOutOfMemory
from ..models.families.base import CONTROL_KEY
from ..models.handles import ModelHandle, VaeHandle
from ..samplers.free_init import renoise_problem
from ..samplers.text2video import scheduled

MAX_RESOLUTION = 8192
MAX_FRAMES = 4096
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def check_widget_values(node_class: type, **values) -> None:
    """Refuse widget values outside their declared range or choices, and numbers that are not finite.

    ComfyUI's own check lets NaN through (`NaN < min` is false) and skips the inputs a node's VALIDATE_INPUTS
    names, so nodes name their FLOAT inputs there and call this (and again when they run, for linked values).
    The headless runner calls the same VALIDATE_INPUTS. A value of None is a linked input, known only at run time.
    """
    declared = node_class.INPUT_TYPES()
    entries = {**declared.get("required", {}), **declared.get("optional", {})}
    for name, value in values.items():
        if value is None:
            continue
        kind, options = entries[name][0], (entries[name][1] if len(entries[name]) > 1 else {})
        if isinstance(kind, (list, tuple)):
            if value not in kind:
                raise NodeInputError(node_class.__name__, name, f"{value!r} is not one of {', '.join(map(str, kind))}")
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue  # not a number at all: the type check before this one reports it
        low, high = options.get("min", -math.inf), options.get("max", math.inf)
        if not math.isfinite(value):
            raise NodeInputError(node_class.__name__, name, f"value {value!r} is not a usable number; give one "
                                                            f"from {low!r} to {high!r}")
        if value < low:
            raise NodeInputError(node_class.__name__, name, f"value {value!r} is smaller than min {low!r}")
        if value > high:
            raise NodeInputError(node_class.__name__, name, f"value {value!r} is bigger than max {high!r}")


def validation_verdict(check: Callable[[], None]) -> bool | str:
    """What VALIDATE_INPUTS returns: True, or the message of the NodeInputError that `check` raised."""
    try:
        check()
    except NodeInputError as error:
        return str(error)
    return True


def video_latents(node: str, input_name: str, latent: dict, device: torch.device) -> torch.Tensor:
    """A `LATENT`'s samples as float32 5-D `[B, C, F, h, w]` on `device` (4-D reads as one video of N frames)."""
    if not isinstance(latent, dict) or "samples" not in latent:
        raise NodeInputError(node, input_name, "expected a LATENT (a dict with 'samples')")
    samples = latent["samples"]
    if samples.ndim == 4:
        samples = samples.permute(1, 0, 2, 3).unsqueeze(0)
    if samples.ndim != 5:
        raise NodeInputError(node, input_name, f"expected a 5-D video latent [B, C, F, h, w], got shape "
                                               f"{tuple(samples.shape)}")
    return samples.to(device=device, dtype=torch.float32)


def check_latent_channels(node: str, input_name: str, samples: torch.Tensor, model: ModelHandle) -> None:
    if samples.shape[1] != model.latent_channels:
        raise NodeInputError(node, input_name, f"the latent has {samples.shape[1]} channels but the model "
                                               f"'{model.name}' expects {model.latent_channels}")


def check_conditioning(node: str, input_name: str, conditioning, model: ModelHandle) -> None:
    """Refuse empty conditioning and conditioning of the wrong width, naming both widths."""
    if not conditioning:
        raise NodeInputError(node, input_name, "the conditioning is empty; connect a T2VTextEncode output")
    for embeds, meta in conditioning:
        problem = model.family.conditioning_problem(meta)
        if problem:
            raise NodeInputError(node, input_name, problem)
        if embeds.shape[-1] != model.cross_attention_dim:
            raise NodeInputError(
                node, input_name,
                f"the conditioning is {embeds.shape[-1]} wide but the model '{model.name}' expects "
                f"{model.cross_attention_dim}; encode the text with the T2V_CLIP loaded with this model")
        for spec in meta.get(CONTROL_KEY, ()):
            check_controlnet_fits(node, input_name, spec.controlnet, model)


def check_controlnet_fits(node: str, input_name: str, controlnet, model: ModelHandle) -> None:
    """Refuse a ControlNet on a model it was not made for (its widths must be the UNet's)."""
    if not model.family.image_model:
        raise NodeInputError(node, input_name, f"a ControlNet is attached, but '{model.name}' is a "
                                               f"{model.family.description} model; ControlNets work on image models")
    ours, theirs = model.unet.config, controlnet.module.config
    for key in ("cross_attention_dim", "block_out_channels"):
        if as_tuple(getattr(ours, key)) != as_tuple(getattr(theirs, key)):
            raise NodeInputError(node, input_name, f"the ControlNet '{controlnet.name}' has {key} "
                                                   f"{getattr(theirs, key)} but the model '{model.name}' has "
                                                   f"{getattr(ours, key)}; load a ControlNet made for this model")


def as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def check_control_frames(node: str, conditioning, frames: int, model: ModelHandle) -> None:
    """Refuse control frames whose count is neither 1 nor the video's (and ControlNets under context windows)."""
    for _embeds, meta in conditioning:
        for spec in meta.get(CONTROL_KEY, ()):
            if model.context_windows is not None:
                raise NodeInputError(node, "model", "ControlNets do not run under T2VContextWindows yet; sample "
                                                    "the controlled video without context windows")
            count = spec.images.shape[0]
            if count not in (1, frames):
                raise NodeInputError(node, "latent", f"the ControlNet '{spec.controlnet.name}' has {count} control "
                                                     f"frames but the video has {frames}; give one control frame "
                                                     "per video frame, or one for all")


def check_frame_limit(node: str, input_name: str, frames: int, model: ModelHandle) -> None:
    """Refuse more frames than one model call takes (AnimateDiff's motion modules), unless context windows cut the
    video into windows the model can take."""
    limit = model.family.frame_limit(model.unet.config)
    if limit is None or frames <= limit:
        return
    if model.context_windows is None:
        raise NodeInputError(node, input_name, f"{frames} frames are more than the {limit} that '{model.name}' takes "
                                               f"at once (its motion module's limit); put T2VContextWindows with a "
                                               f"context_length of at most {limit} (16 is usual) on the model, or "
                                               f"make {limit} frames or fewer")
    if model.context_windows.length > limit:
        raise NodeInputError(node, "model", f"T2VContextWindows' context_length {model.context_windows.length} is "
                                            f"more than the {limit} frames '{model.name}' takes at once; lower it to "
                                            f"{limit} or less")


def check_free_init(node: str, model: ModelHandle, plan) -> None:
    """Refuse FreeInit (T2VFreeInit) for runs it cannot repeat: partial ones (`plan`, a `SamplingPlan`), or
    schedules that cannot re-noise to the last training step."""
    if model.free_init is None:
        return
    whole_run = plan.first_step == 0 and plan.last_step == plan.steps and plan.add_noise \
        and not plan.noise_input_at_start
    if not whole_run:
        raise NodeInputError(node, "model", "the model has T2VFreeInit, which repeats whole runs from noise; it cannot "
                                            "run with denoise < 1, start/end steps, add_noise off or video-to-video: "
                                            "use the model from before T2VFreeInit here")
    problem = renoise_problem(scheduled(plan, model.scheduler_config, torch.device("cpu")))
    if problem:
        raise NodeInputError(node, "sampler_name", f"T2VFreeInit: {problem}")


def conditioning_on(conditioning, device: torch.device) -> list:
    return [[embeds.to(device), meta] for embeds, meta in conditioning]


def guidance_conditioning(node: str, positive, negative, cfg: float, model: ModelHandle) -> tuple[list, list]:
    """Check both prompts' conditioning against the model (the negative only when cfg uses it); move them to it."""
    check_conditioning(node, "positive", positive, model)
    if cfg > 1:
        check_conditioning(node, "negative", negative, model)
    return conditioning_on(positive, model.device), conditioning_on(negative, model.device)


# How Stable Diffusion's four latent channels map to RGB, approximately (the usual linear preview).
LATENT_RGB = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177))


def latent_preview(latents: torch.Tensor):
    """A cheap PIL preview of the first frame of 5-D latents, without the VAE."""
    from PIL import Image

    frame = latents[0, :, 0].float()
    if frame.shape[0] != len(LATENT_RGB):
        return None
    rgb = torch.einsum("chw,cr->hwr", frame, torch.tensor(LATENT_RGB, device=frame.device))
    pixels = ((rgb + 1) / 2).clamp(0, 1).mul(255).byte().cpu().numpy()
    return Image.fromarray(pixels)


@contextlib.contextmanager
def explain_out_of_memory(node: str, task: str, options: list[str]):
    """Turn a GPU out-of-memory error into one that names the node, what it was doing and what would fit."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        if isinstance(exc, NodeOutOfMemory):
            raise
        bridge.soft_empty_cache()
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
        raise NodeOutOfMemory(f"{node}: the GPU ran out of memory {task}. To fit: " + "; ".join(options)
                              + f". ({detail})") from exc


def sampling_memory_options(model: ModelHandle, frames: int) -> list[str]:
    """What lowers a sampling run's memory, given how `model` is already patched."""
    options = []
    if model.context_windows is None:
        options.append(f"put T2VContextWindows (context_length 16) before this node, so the model sees 16 frames at "
                       f"a time instead of all {frames}")
    else:
        options.append(f"lower T2VContextWindows' context_length (now {model.context_windows.length})")
    if not any(isinstance(patch, FeedForwardChunking) for patch in model.patches):
        options.append("add T2VFeedForwardChunking to the model")
    options.append("make the frames smaller or fewer")
    return options


def vae_memory_options(vae: VaeHandle, frames_per_batch: int) -> list[str]:
    """What lowers a VAE decode's or encode's memory, given its settings."""
    options = []
    if frames_per_batch != 1:
        options.append(f"set frames_per_batch to 1 (now {frames_per_batch or 'all frames'})")
    if vae.tiling is None:
        options.append("put T2VVAETiling on the VAE")
    else:
        options.append(f"lower T2VVAETiling's tile_size (now {vae.tiling.size})")
    return options


class StepProgress:
    """A progress callback for the samplers and VAE: ticks the bar and honours interrupts every step.

    Wraps one large step of a node (sampling, VAE, saving); the allocator cache is emptied after it.
    Stages that each count from 1 (Text2Video-Zero's loops) add up on one bar of `total` ticks
    (default: the first stage's length).
    """

    def __init__(self, description: str, total: int | None = None):
        self.description = description
        self.total = total
        self.progress = None
        self.finished_stages = 0
        self.last_done = 0

    def __call__(self, done: int, total: int, latents: torch.Tensor | None = None) -> None:
        if done <= self.last_done:  # a new stage counts from the start again
            self.finished_stages += self.last_done
        self.last_done = done
        if self.progress is None:
            self.progress = bridge.Progress(self.total or total, self.description)
        preview = latent_preview(latents) if latents is not None and bridge.shows_previews() else None
        self.progress.update(self.finished_stages + done, preview)
        bridge.check_interrupt()

    def __enter__(self):
        bridge.check_interrupt()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.close()
        bridge.soft_empty_cache()
