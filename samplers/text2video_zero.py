"""Text2Video-Zero: an image UNet made into a video model (Khachatryan et al. 2023, TextToVideoZeroPipeline).

Frame 0 is denoised alone to `t1` and on to `t0`; copies of its `t0` latent are translated by a
motion field and re-noised back to `t1`; then all frames are denoised together from `t1` while a
cross-frame attention patch makes every frame attend to frame 0. Steps are counted as in the
reference: `t1` and `t0` are distances from the end of the schedule.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .schedulers import SAMPLERS, step_start
from .text2video import SamplerState, SamplingPlan, model_space, randn, raw_space, sample_model, seeded_generator

MOTION_GRID = 512
"""The reference defines motion in pixels on a fixed 512x512 grid, whatever the frame size."""


def split_steps(steps: int, t0: int, t1: int) -> tuple[int, int]:
    """The step indices where the anchor frame reaches `t1` and `t0`."""
    return steps - t1 - 1, steps - t0 - 1


def schedule_problem(steps: int, t0: int, t1: int) -> str | None:
    """Why `t0`/`t1` do not fit `steps`, or None."""
    if not 0 <= t0 < t1:
        return f"needs 0 <= t0 < t1, got t0 = {t0}, t1 = {t1}"
    if t1 >= steps:
        return (f"t1 = {t1} needs more than {t1} steps (it counts steps from the end), got {steps}; use at least "
                f"{t1 + 1} steps or a smaller t1 (the defaults t0 = 44, t1 = 47 need 48 steps or more)")
    return None


def translate(latents: torch.Tensor, shifts: list[tuple[float, float]]) -> torch.Tensor:
    """Shift each latent `[N, C, h, w]` by `(x, y)` pixels of the 512 grid (nearest, reflected at the edges)."""
    height, width = latents.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(MOTION_GRID, device=latents.device),
                                torch.arange(MOTION_GRID, device=latents.device), indexing="ij")
    pixel_grid = torch.stack([cols, rows]).to(latents.dtype)[None]
    warped = torch.empty_like(latents)
    for index, (shift_x, shift_y) in enumerate(shifts):
        shift = torch.tensor([shift_x, shift_y], dtype=latents.dtype, device=latents.device).view(1, 2, 1, 1)
        source = (pixel_grid + shift) / MOTION_GRID * 2.0 - 1.0
        source = F.interpolate(source, size=(height, width), mode="bilinear").permute(0, 2, 3, 1)
        warped[index] = F.grid_sample(latents[index:index + 1], source, mode="nearest", padding_mode="reflection",
                                      align_corners=False)[0]
    return warped


def moved_copies(frame: torch.Tensor, frame_ids: list[int], motion_x: float, motion_y: float) -> torch.Tensor:
    """Copies of one latent frame `[C, h, w]` for `frame_ids[1:]`, copy `i` shifted by `i` times the motion."""
    copies = frame[None].expand(len(frame_ids) - 1, -1, -1, -1)
    return translate(copies, [(motion_x * i, motion_y * i) for i in frame_ids[1:]])


def renoise_sigma(x: torch.Tensor, sigma_from, sigma_to, noise: torch.Tensor) -> torch.Tensor:
    """Forward-diffuse `x = x0 + sigma_from * eps` to `sigma_to` (k-diffusion's sigma space)."""
    return x + (sigma_to**2 - sigma_from**2) ** 0.5 * noise


def renoise(scheduler, sigma_space: bool, x: torch.Tensor, from_position: int, to_position: int,
            generator: torch.Generator) -> torch.Tensor:
    """Forward-diffuse `x` from schedule position `from_position` back to the noisier `to_position`.

    Integer-timestep schedulers take the reference's DDPM jump, `prod(alphas[T0:T1])` (kept as the
    reference has it, one step off the exact ratio); sigma-space ones the same jump in sigma.
    """
    noise = randn(x.shape, generator, x.device)
    if sigma_space:
        sigma_from, sigma_to = scheduler.sigmas[from_position], scheduler.sigmas[to_position]
        return renoise_sigma(x, sigma_from.to(x.device), sigma_to.to(x.device), noise)
    low, high = int(scheduler.timesteps[from_position]), int(scheduler.timesteps[to_position])
    alpha = torch.prod(scheduler.alphas[low:high]).to(x.device)
    return alpha.sqrt() * x + (1 - alpha).sqrt() * noise


@dataclasses.dataclass(frozen=True)
class AnchorFrame:
    """Frame 0 at `t1` and at `t0`, each with the sampler state it stopped in."""

    at_t1: torch.Tensor
    state_t1: SamplerState
    at_t0: torch.Tensor
    state_t0: SamplerState


def denoise_anchor(model, positive, negative, cfg: float, shape: tuple, plan: SamplingPlan, t0: int, t1: int,
                   generator: torch.Generator, callback=None) -> AnchorFrame:
    """Draw frame 0's noise (`[B, C, 1, h, w]`) and denoise it to `t1`, then to `t0`."""
    t1_step, t0_step = split_steps(plan.steps, t0, t1)
    empty = torch.zeros(shape, device=model.device)
    to_t1 = dataclasses.replace(plan, end_step=t1_step, return_with_leftover_noise=True)
    at_t1, state_t1 = sample_model(model, positive, negative, cfg, empty, to_t1, generator, callback=callback)
    to_t0 = dataclasses.replace(plan, start_step=t1_step, end_step=t0_step, add_noise=False,
                                return_with_leftover_noise=True)
    at_t0, state_t0 = sample_model(model, positive, negative, cfg, at_t1, to_t0, generator, resume=state_t1,
                                   callback=callback)
    return AnchorFrame(at_t1, state_t1, at_t0, state_t0)


def motion_latents(anchor: AnchorFrame, frame_ids: list[int], motion_x: float, motion_y: float,
                   generator: torch.Generator) -> tuple[torch.Tensor, SamplerState]:
    """All frames at `t1` (raw): frame 0's own `t1` latent, then its `t0` latent moved to `frame_ids[1:]` and re-noised.

    `generator` continues from where the anchor's sampling left it; the returned state resumes the
    anchor's `t1` scheduler with the generator after the re-noising draw.
    """
    scheduler, sampler_name = anchor.state_t0.scheduler, anchor.state_t0.schedule_key[0]
    steps, latent_scale = anchor.state_t0.schedule_key[2], anchor.state_t0.latent_scale
    at_t1 = model_space(anchor.at_t1, latent_scale, anchor.state_t1)
    source = model_space(anchor.at_t0, latent_scale, anchor.state_t0)[:, :, 0]  # [B, C, h, w]
    moved = torch.stack([moved_copies(video, frame_ids, motion_x, motion_y) for video in source])  # [B, F-1, C, h, w]
    renoised = renoise(scheduler, SAMPLERS[sampler_name].sigma_space, moved.flatten(0, 1),
                       step_start(scheduler, anchor.state_t0.next_step, steps),
                       step_start(scheduler, anchor.state_t1.next_step, steps), generator)
    renoised = renoised.reshape(moved.shape).permute(0, 2, 1, 3, 4)
    frames = torch.cat([at_t1, renoised], dim=2)
    raw = raw_space(frames, latent_scale)
    state = dataclasses.replace(anchor.state_t1, generator_state=generator.get_state(), latents=frames, returned=raw)
    return raw, state


def chunk_frame_ids(frames: int, chunk_size: int) -> list[list[int]]:
    """The reference's chunking recipe: each chunk is frame 0 (the anchor) then `chunk_size - 1` new frames.

    `chunk_size = 0` is one pass over all frames (frame 0 is its own anchor).
    """
    if chunk_size <= 0:
        return [list(range(frames))]
    starts = list(range(0, frames, chunk_size - 1))
    ends = starts[1:] + [frames]
    return [[0, *range(start, end)] for start, end in zip(starts, ends)]


def zero_steps(steps: int, t0: int, t1: int, frames: int, chunk_size: int) -> int:
    """Denoising steps of a whole run: frame 0 to `t0`, then every chunk from `t1` to the end."""
    t1_step, t0_step = split_steps(steps, t0, t1)
    return t0_step + len(chunk_frame_ids(frames, chunk_size)) * (steps - t1_step)


def text2video_zero(model, cross_frame_model, positive, negative, cfg: float, shape: tuple, plan: SamplingPlan,
                    t0: int, t1: int, frames: int, motion_x: float, motion_y: float, chunk_size: int, seed: int,
                    callback=None) -> torch.Tensor:
    """Latents `[B, C, frames, h, w]`, chunk by chunk; `shape` is frame 0's `[B, C, 1, h, w]`.

    Every chunk starts from the seed as the reference's recipe does, so frame 0 and its sampler state
    are computed once and reused; each chunk's first frame (the anchor copy) is dropped (the
    first chunk holds frame 0 twice).
    """
    generator = seeded_generator(seed)
    anchor = denoise_anchor(model, positive, negative, cfg, shape, plan, t0, t1, generator, callback)
    after_anchor = generator.get_state()
    t1_step, _t0_step = split_steps(plan.steps, t0, t1)
    finish = dataclasses.replace(plan, start_step=t1_step, add_noise=False, return_with_leftover_noise=False)
    outputs = []
    for frame_ids in chunk_frame_ids(frames, chunk_size):
        generator.set_state(after_anchor)
        start, state = motion_latents(anchor, frame_ids, motion_x, motion_y, generator)
        video, _ = sample_model(cross_frame_model, positive, negative, cfg, start, finish, generator, resume=state,
                                callback=callback)
        outputs.append(video[:, :, 1:] if chunk_size > 0 else video)
    return torch.cat(outputs, dim=2)
