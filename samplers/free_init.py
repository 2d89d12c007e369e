"""FreeInit (Wu et al. 2023): sample, re-noise the result to the last training step, keep its low frequencies
and take the high ones from fresh noise, and sample again; as diffusers' `enable_free_init`."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

FILTERS = ("butterworth", "gaussian", "ideal")


@dataclasses.dataclass(frozen=True)
class FreeInitOptions:
    """T2VFreeInit's inputs; the defaults are diffusers' (`num_iters`, `method`, `order`, stop frequencies)."""

    iterations: int = 3
    method: str = "butterworth"
    order: int = 4
    spatial_stop_frequency: float = 0.25
    temporal_stop_frequency: float = 0.25
    fast_sampling: bool = False  # coarse to fine: pass i of n runs int(steps * (i + 1) / n) steps

    def steps(self, steps: int, iteration: int) -> int:
        """The steps pass `iteration` runs of a `steps`-step schedule."""
        if not self.fast_sampling:
            return steps
        return max(1, int(steps / self.iterations * (iteration + 1)))

    def total_steps(self, steps: int) -> int:
        """The steps all passes of a `steps`-step schedule run together (the progress bar's length)."""
        return sum(self.steps(steps, iteration) for iteration in range(self.iterations))


def low_pass_filter(frames: int, height: int, width: int, options: FreeInitOptions) -> torch.Tensor:
    """The `[F, h, w]` weights of the low frequencies (zero frequency at the centre, as after `fftshift`).

    The squared normalised distance from the centre has its time axis scaled by spatial/temporal stop
    frequency; butterworth `1 / (1 + (d2 / s^2)^order)`, gaussian `exp(-d2 / (2 s^2))`, ideal `d2 <= 2 s`
    (the reference's threshold). A stop frequency of 0 keeps nothing.
    """
    spatial, temporal = options.spatial_stop_frequency, options.temporal_stop_frequency
    if spatial == 0 or temporal == 0:
        return torch.zeros(frames, height, width)

    def centred(size: int) -> torch.Tensor:
        return 2 * torch.arange(size, dtype=torch.float64) / size - 1

    d2 = ((spatial / temporal) * centred(frames)).view(-1, 1, 1) ** 2 + centred(height).view(1, -1, 1) ** 2 \
        + centred(width).view(1, 1, -1) ** 2
    if options.method == "butterworth":
        weights = 1 / (1 + (d2 / spatial**2) ** options.order)
    elif options.method == "gaussian":
        weights = torch.exp(-1 / (2 * spatial**2) * d2)
    else:
        weights = (d2 <= spatial * 2).double()
    return weights.float()


def mix_frequencies(low: torch.Tensor, high: torch.Tensor, low_pass: torch.Tensor) -> torch.Tensor:
    """The low frequencies of `low` and the high ones of `high` (5-D, over frames, height, width)."""
    dims = (-3, -2, -1)

    def spectrum(x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fftshift(torch.fft.fftn(x, dim=dims), dim=dims)

    mixed = spectrum(low) * low_pass + spectrum(high) * (1 - low_pass)
    return torch.fft.ifftn(torch.fft.ifftshift(mixed, dim=dims), dim=dims).real


def last_step_renoise(scheduler, latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """`latents` noised with `noise` to the scheduler's last training timestep (the reference's `add_noise`)."""
    last = torch.full((latents.shape[0],), scheduler.config.num_train_timesteps - 1, dtype=torch.long)
    return scheduler.add_noise(latents, noise, last.to(latents.device)).float()


SUITED = "use ddim, ddpm, pndm, dpmpp_2m, dpmpp_2m_sde or unipc"


def renoise_problem(scheduler) -> str | None:
    """Why FreeInit cannot re-noise with this scheduler, or None: sigma-scaled samplers (euler, lms, heun) start
    from noise times `init_noise_sigma`, which the re-noising would scale once more (diffusers does, and gets noise
    far too strong), and some schedules lack the last training step (diffusers fails there)."""
    if float(scheduler.init_noise_sigma) != 1.0:
        return (f"{type(scheduler).__name__} scales its noise by sigma, which FreeInit's re-noising would do a second "
                f"time; {SUITED}")
    try:
        last_step_renoise(scheduler, torch.zeros(1, 1, 1, 1, 1), torch.zeros(1, 1, 1, 1, 1))
    except (IndexError, ValueError, RuntimeError):
        return f"{type(scheduler).__name__} cannot re-noise to the last training step with this schedule; {SUITED}"
    return None


def free_init(run: Callable[[torch.Tensor, int], torch.Tensor], fresh_scheduler: Callable[[], object],
              initial: torch.Tensor, options: FreeInitOptions, draw: Callable[[tuple], torch.Tensor]) -> torch.Tensor:
    """`run(latents, iteration)` (a whole schedule from noisy latents) `options.iterations` times from `initial` noise.

    Between runs the result is re-noised with the initial noise to the last training step, and its high
    frequencies are replaced by those of `draw(shape)` (fresh noise, from the seed's generator).
    """
    out = run(initial, 0)
    low_pass = low_pass_filter(*initial.shape[2:], options).to(initial.device)
    for iteration in range(1, options.iterations):
        noised = last_step_renoise(fresh_scheduler(), out, initial)
        out = run(mix_frequencies(noised, draw(tuple(initial.shape)), low_pass), iteration)
    return out
