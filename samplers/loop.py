"""The denoising loop shared by every sampler: one UNet call and one scheduler step per position."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import torch

NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ProgressCallback = Callable[[int, int, torch.Tensor], None]


def frames_view(x: torch.Tensor) -> torch.Tensor:
    """`[B, C, F, h, w]` -> `[B*F, C, h, w]`, the layout schedulers step and draw noise on."""
    batch, channels, frames, height, width = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)


def video_view(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Inverse of `frames_view`."""
    frames_total, channels, height, width = x.shape
    return x.reshape(batch, frames_total // batch, channels, height, width).permute(0, 2, 1, 3, 4)


def step_kwargs(scheduler, generator: torch.Generator, eta: float) -> dict:
    """The extra `scheduler.step` arguments its class accepts (eta for DDIM, the generator for noise)."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


@dataclasses.dataclass
class ModelCall:
    """The last UNet call of a loop: enough to estimate the clean latent it implies."""

    position: int
    timestep: torch.Tensor
    sample: torch.Tensor
    noise_pred: torch.Tensor


def denoise(predict_noise: NoisePredictor, scheduler, x: torch.Tensor, first: int, last: int, *,
            generator: torch.Generator, eta: float = 0.0, video_steps: bool = False,
            callback: ProgressCallback | None = None) -> tuple[torch.Tensor, ModelCall | None]:
    """Denoise 5-D latents over `scheduler.timesteps[first:last]`.

    The scheduler steps on the `[B*F, C, h, w]` view (where ancestral/SDE noise is drawn), or with `video_steps`
    on the 5-D latents as they are (AnimateDiff's reference); `callback(done, total, latents)` is called after
    every position. A predictor with an `at_step(position, total)` method is told where in the schedule each call is.
    """
    kwargs = step_kwargs(scheduler, generator, eta)
    batch = x.shape[0]
    last_call = None
    at_step = getattr(predict_noise, "at_step", None)
    for done, position in enumerate(range(first, last), start=1):
        t = scheduler.timesteps[position]
        if at_step is not None:
            at_step(position, len(scheduler.timesteps))
        noise_pred = predict_noise(scheduler.scale_model_input(x, t), t)
        last_call = ModelCall(position, t, x, noise_pred)
        if video_steps:
            x = scheduler.step(noise_pred, t, x, **kwargs).prev_sample
        else:
            x = video_view(scheduler.step(frames_view(noise_pred), t, frames_view(x), **kwargs).prev_sample, batch)
        if callback is not None:
            callback(done, last - first, x)
    return x, last_call


def clean_estimate(scheduler, call: ModelCall, sigma_space: bool) -> torch.Tensor:
    """The x0 prediction of a model call, for a run that stops early without leftover noise."""
    prediction = scheduler.config.prediction_type
    out, x = call.noise_pred, call.sample
    if prediction == "sample":
        return out
    if hasattr(scheduler, "sigmas"):
        sigma = scheduler.sigmas[call.position].to(x.device, torch.float32)
        if sigma_space:  # k-diffusion scale x = x0 + sigma * eps: bring it to the alpha scale
            x = x / (sigma**2 + 1).sqrt()
        alpha_t = 1.0 / (sigma**2 + 1).sqrt()
        sigma_t = sigma * alpha_t
    else:
        alpha_bar = scheduler.alphas_cumprod[int(call.timestep)].to(x.device, torch.float32)
        alpha_t, sigma_t = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction == "v_prediction":
        return alpha_t * x - sigma_t * out
    return (x - sigma_t * out) / alpha_t
