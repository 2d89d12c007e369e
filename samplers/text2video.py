"""Sampling a video latent: text-to-video from noise, img2img-style partial denoising, split runs."""

from __future__ import annotations

import copy
import dataclasses

import torch

from .context_windows import windowed
from .free_init import free_init
from .guidance import GuidedNoisePredictor
from .loop import ProgressCallback, clean_estimate, denoise, frames_view, video_view
from .schedulers import SAMPLERS, build_scheduler, denoise_start_step, step_start

FRAME_NOISE = ("per_video", "per_frame", "shared")
"""How a run from pure noise draws it: `[B, C, F, h, w]` at once (text-to-video pipelines), `[B*F, C, h, w]`
(image pipelines on a batch of frames), or one frame's `[B, C, 1, h, w]` repeated over the frames
(the Text2Video-Zero ControlNet recipe)."""

RESUME_KEY = "t2v_resume"
"""Pack-private `LATENT` key holding the `SamplerState` of a run returned with leftover noise."""


@dataclasses.dataclass(frozen=True)
class SamplingPlan:
    """Which steps of which schedule to run, and how to start and stop (T2VSampler's inputs)."""

    sampler_name: str
    scheduler_name: str
    steps: int
    denoise: float = 1.0
    start_step: int = 0
    end_step: int = 10000
    add_noise: bool = True
    return_with_leftover_noise: bool = False
    eta: float = 0.0
    noise_input_at_start: bool = False  # img2img: noise the input even from the first step (video-to-video)
    frame_noise: str = "per_video"  # how a run from pure noise draws it (FRAME_NOISE)

    @property
    def first_step(self) -> int:
        return max(self.start_step, denoise_start_step(self.steps, self.denoise))

    @property
    def last_step(self) -> int:
        return min(self.end_step, self.steps)

    @property
    def schedule_key(self) -> tuple:
        """What a carried state must match to continue this run."""
        return (self.sampler_name, self.scheduler_name, self.steps, denoise_start_step(self.steps, self.denoise))


@dataclasses.dataclass(frozen=True)
class SamplerState:
    """Where a run stopped: enough to continue it exactly (scheduler history, generator position).

    `latents` are the stopped run's own (scaled) latents; `returned` is the raw tensor it handed out, so
    that a LATENT passed on unchanged continues bit for bit.
    """

    schedule_key: tuple
    next_step: int
    scheduler: object
    generator_state: torch.Tensor
    latents: torch.Tensor
    latent_scale: float = 1.0
    returned: torch.Tensor | None = None

    def mismatch(self, plan: SamplingPlan, shape) -> str | None:
        """Why a run that starts where this state stopped cannot continue it, or None."""
        sampler_name, scheduler_name, steps, denoise_start = self.schedule_key
        if plan.schedule_key != self.schedule_key:
            return (f"that run used sampler '{sampler_name}', scheduler '{scheduler_name}', {steps} steps (from "
                    f"step {denoise_start}); continue it with the same settings")
        if tuple(shape) != tuple(self.latents.shape):
            return (f"that run's latent had shape {tuple(self.latents.shape)}, this one has {tuple(shape)}; a "
                    "stopped run continues only on the same latent")
        return None


def model_space(samples: torch.Tensor, latent_scale: float, state: SamplerState | None) -> torch.Tensor:
    """Raw LATENT samples -> the scaled latents the UNet works on.

    A LATENT straight from a run that stopped early gives back that run's own latents, exactly.
    """
    if state is not None and state.returned is samples:
        return state.latents
    return samples * latent_scale


def raw_space(latents: torch.Tensor, latent_scale: float) -> torch.Tensor:
    """Scaled latents -> raw LATENT samples (as the reference decodes: `1 / scaling_factor * latents`)."""
    return latents * (1 / latent_scale)


def seeded_generator(seed: int) -> torch.Generator:
    """The one CPU generator every random draw of a node comes from."""
    return torch.Generator("cpu").manual_seed(int(seed))


def randn(shape, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard normal noise drawn in float32 on the CPU, then moved: the same on every device."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


def initial_noise(shape: tuple, frame_noise: str, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Pure noise for video latents of `shape` `[B, C, F, h, w]`, drawn in the `frame_noise` layout."""
    batch, channels, frames, height, width = shape
    if frame_noise == "per_frame":
        return video_view(randn((batch * frames, channels, height, width), generator, device), batch)
    if frame_noise == "shared":
        return randn((batch, channels, 1, height, width), generator, device).repeat(1, 1, frames, 1, 1)
    return randn(shape, generator, device)


def start_latents(scheduler, latents: torch.Tensor, position: int, generator: torch.Generator,
                  noise_input_at_start: bool = False, frame_noise: str = "per_video") -> torch.Tensor:
    """Noise the input for a run starting at schedule position `position`.

    From the start of the schedule the input only gives the shape (noise drawn as `frame_noise` says,
    times `init_noise_sigma`); later, or always with `noise_input_at_start`, the input is noised to that
    timestep with noise drawn as `[B*F, C, h, w]` (the img2img reference).
    """
    if position == 0 and not noise_input_at_start:
        return initial_noise(tuple(latents.shape), frame_noise, generator, latents.device) * scheduler.init_noise_sigma
    frames = frames_view(latents)
    noise = randn(frames.shape, generator, latents.device)
    timestep = scheduler.timesteps[position:position + 1]
    return video_view(scheduler.add_noise(frames, noise, timestep), latents.shape[0])


def scheduled(plan: SamplingPlan, scheduler_config: dict, device: torch.device):
    """A fresh scheduler for `plan`, its timesteps set for the plan's steps."""
    scheduler = build_scheduler(plan.sampler_name, plan.scheduler_name, scheduler_config)
    scheduler.set_timesteps(plan.steps, device=device)
    return scheduler


def sample(predict_noise, scheduler_config: dict, latents: torch.Tensor, plan: SamplingPlan,
           generator: torch.Generator, resume: SamplerState | None = None,
           callback: ProgressCallback | None = None,
           video_steps: bool = False) -> tuple[torch.Tensor, SamplerState | None]:
    """Run `plan` on float32 5-D `latents`; return the result and, if stopped early with noise, its state.

    Every random draw comes from `generator`, in the reference's layout and order (`video_steps`: the scheduler
    steps on the 5-D latents, see `loop.denoise`).
    """
    first = plan.first_step
    last = max(plan.last_step, first)
    if first >= plan.steps:  # denoise keeps no step: the input comes back as it is
        return latents, None
    if (resume is not None and not plan.add_noise and resume.next_step == first
            and resume.mismatch(plan, latents.shape) is None):
        scheduler = copy.deepcopy(resume.scheduler)
        generator.set_state(resume.generator_state)
        x = latents
    else:
        scheduler = scheduled(plan, scheduler_config, latents.device)
        begin = step_start(scheduler, first, plan.steps)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        x = start_latents(scheduler, latents, begin, generator, plan.noise_input_at_start, plan.frame_noise) \
            if plan.add_noise else latents
    x, last_call = denoise(predict_noise, scheduler, x, step_start(scheduler, first, plan.steps),
                           step_start(scheduler, last, plan.steps), generator=generator, eta=plan.eta,
                           video_steps=video_steps, callback=callback)
    if last == plan.steps:
        return x, None
    if not plan.return_with_leftover_noise:
        if last_call is None:  # no step ran: there is no denoised estimate, only the (noised) input
            return x, None
        return clean_estimate(scheduler, last_call, SAMPLERS[plan.sampler_name].sigma_space), None
    return x, SamplerState(plan.schedule_key, last, scheduler, generator.get_state(), x)


def sample_model(model, positive, negative, cfg: float, latents: torch.Tensor, plan: SamplingPlan,
                 generator: torch.Generator, resume: SamplerState | None = None,
                 callback: ProgressCallback | None = None) -> tuple[torch.Tensor, SamplerState | None]:
    """`sample` with a `ModelHandle`'s UNet, its family's guidance, its context windows and its patches (installed
    for this call only), on raw latents, drawing the noise as the family's reference does.

    The input is scaled into the UNet's latent space and the result scaled back; with no step to run the
    input comes back as it is.
    """
    def guided(frames: int, positive, negative):
        shape = (*latents.shape[:2], frames, *latents.shape[3:])
        return GuidedNoisePredictor(model.family.denoiser(model.unet), model.family.video_unet,
                                    model.guidance(positive, negative, cfg, shape), model.dtype,
                                    model.family.context_per_frame)

    whole = guided(latents.shape[2], positive, negative)
    if model.context_windows is None:
        predictor = whole
    else:
        timesteps = scheduled(plan, model.scheduler_config, latents.device).timesteps
        predictor = windowed(guided, (positive, negative), model.context_windows, timesteps, latents.shape[2])
    scaled = model_space(latents, model.latent_scale, resume)
    if plan.frame_noise == "per_video":  # a video's noise in the layout of the family's reference
        plan = dataclasses.replace(plan, frame_noise=model.family.video_noise)
    for shape in model.family.draws_before_noise(tuple(latents.shape), model.spatial_scale):
        randn(shape, generator, torch.device("cpu"))  # drawn by the conditioning node from the same seed
    controlnets = tuple(control.model for control in whole.controls)
    with model.patched(frames_per_group=latents.shape[2], also=controlnets), torch.no_grad():
        if model.free_init is None:
            out, state = sample(predictor, model.scheduler_config, scaled, plan, generator, resume, callback,
                                model.family.steps_on_video)
        else:
            out, state = sample_free_init(predictor, model, scaled, plan, generator, callback), None
    if out is scaled:
        return latents, None
    raw = raw_space(out, model.latent_scale)
    if state is not None:
        state = dataclasses.replace(state, latent_scale=model.latent_scale, returned=raw)
    return raw, state


def sample_free_init(predict_noise, model, latents: torch.Tensor, plan: SamplingPlan, generator: torch.Generator,
                     callback: ProgressCallback | None = None) -> torch.Tensor:
    """A whole-schedule `plan` from noise, repeated by the model's FreeInit options (see `free_init`): the
    initial noise drawn as a plain run draws it, the fresh noise of each later pass as `[B, C, F, h, w]`."""
    def fresh_scheduler():
        return scheduled(plan, model.scheduler_config, latents.device)

    def run(x: torch.Tensor, iteration: int) -> torch.Tensor:
        steps = model.free_init.steps(plan.steps, iteration)
        return sample(predict_noise, model.scheduler_config, x, dataclasses.replace(whole, steps=steps), generator,
                      None, callback, model.family.steps_on_video)[0]

    whole = dataclasses.replace(plan, add_noise=False)
    initial = start_latents(fresh_scheduler(), latents, 0, generator, frame_noise=plan.frame_noise)
    return free_init(run, fresh_scheduler, initial, model.free_init, lambda shape: randn(shape, generator,
                                                                                        latents.device))
