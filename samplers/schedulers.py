"""`sampler_name` x `scheduler` -> a diffusers scheduler built from a checkpoint's config."""

from __future__ import annotations

import dataclasses
import inspect

import diffusers


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """How one `sampler_name` maps onto a diffusers scheduler class."""

    class_name: str
    overrides: tuple = ()
    sigma_space: bool = False  # k-diffusion style: the sample carries sigma, inputs are scaled
    full_schedule_only: bool = False  # its warm-up cannot start mid-way
    continuous_timesteps: bool = False  # honours a config's `timestep_type: continuous` (the UNet sees 0.25 log sigma)

    @property
    def scheduler_class(self):
        return getattr(diffusers, self.class_name)

    @property
    def has_karras(self) -> bool:
        return "use_karras_sigmas" in inspect.signature(self.scheduler_class.__init__).parameters


SAMPLERS: dict[str, SamplerSpec] = {
    "ddim": SamplerSpec("DDIMScheduler"),
    "ddpm": SamplerSpec("DDPMScheduler"),
    "pndm": SamplerSpec("PNDMScheduler", full_schedule_only=True),
    "lms": SamplerSpec("LMSDiscreteScheduler", sigma_space=True),
    "euler": SamplerSpec("EulerDiscreteScheduler", sigma_space=True, continuous_timesteps=True),
    "euler_ancestral": SamplerSpec("EulerAncestralDiscreteScheduler", sigma_space=True),
    "heun": SamplerSpec("HeunDiscreteScheduler", sigma_space=True),
    "dpmpp_2m": SamplerSpec("DPMSolverMultistepScheduler",
                            (("algorithm_type", "dpmsolver++"), ("solver_order", 2))),
    "dpmpp_2m_sde": SamplerSpec("DPMSolverMultistepScheduler",
                                (("algorithm_type", "sde-dpmsolver++"), ("solver_order", 2))),
    "unipc": SamplerSpec("UniPCMultistepScheduler"),
}
SAMPLER_NAMES = tuple(SAMPLERS)
SCHEDULER_NAMES = ("normal", "karras")


def karras_problem(sampler_name: str, scheduler_name: str) -> str | None:
    """Why this combination cannot run, or None."""
    if scheduler_name == "karras" and not SAMPLERS[sampler_name].has_karras:
        with_karras = ", ".join(n for n, s in SAMPLERS.items() if s.has_karras)
        return (f"sampler '{sampler_name}' has no Karras sigmas; use scheduler 'normal' "
                f"or one of these samplers: {with_karras}")
    return None


def timestep_problem(sampler_name: str, config: dict) -> str | None:
    """Why this sampler cannot give a checkpoint with this scheduler config the timesteps it was trained on, or None."""
    if config.get("timestep_type") == "continuous" and not SAMPLERS[sampler_name].continuous_timesteps:
        able = ", ".join(name for name, spec in SAMPLERS.items() if spec.continuous_timesteps)
        return (f"the model was trained on continuous timesteps (its scheduler config says timestep_type "
                f"'continuous', as Stable Video Diffusion), which '{sampler_name}' does not compute; use {able} "
                f"(with scheduler karras for the checkpoint's own schedule)")
    return None


def build_scheduler(sampler_name: str, scheduler_name: str, config: dict):
    """A fresh scheduler of the sampler's class from the checkpoint's scheduler config."""
    spec = SAMPLERS[sampler_name]
    problem = karras_problem(sampler_name, scheduler_name)
    if problem:
        raise ValueError(problem)
    overrides = dict(spec.overrides)
    if spec.has_karras:
        overrides["use_karras_sigmas"] = scheduler_name == "karras"
    return spec.scheduler_class.from_config(config, **overrides)


def step_start(scheduler, step: int, steps: int) -> int:
    """Index into `scheduler.timesteps` where step `step` of `steps` begins.

    Steps count solver steps, not model calls (heun's two calls are one step); the end of the
    last step is the end of the schedule, warm-up entries (pndm) included.
    """
    if step >= steps:
        return len(scheduler.timesteps)
    return step * scheduler.order


def denoise_start_step(steps: int, denoise: float) -> int:
    """First step kept by `denoise` (diffusers' `strength`): the last `int(steps * denoise)` steps run."""
    return steps - min(int(steps * denoise), steps)
