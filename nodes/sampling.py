"""T2VSampler: denoise a video latent with a text-to-video (3D) or image (2D) UNet."""

from __future__ import annotations

from ..errors import NodeInputError
from ..samplers.schedulers import SAMPLER_NAMES, SAMPLERS, SCHEDULER_NAMES, karras_problem, timestep_problem
from ..samplers.text2video import FRAME_NOISE, RESUME_KEY, SamplingPlan, sample_model, seeded_generator
from .common import (MAX_SEED, StepProgress, check_control_frames, check_frame_limit, check_free_init,
                     check_latent_channels, check_widget_values, explain_out_of_memory, guidance_conditioning,
                     sampling_memory_options, validation_verdict, video_latents)

NODE = "T2VSampler"
MAX_STEPS = 10000


def sampler_inputs() -> dict:
    """The seed/steps/cfg/sampler/scheduler inputs shared by the sampling nodes."""
    return {
        "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                         "tooltip": "Random seed. The same seed gives the same video on any device."}),
        "steps": ("INT", {"default": 25, "min": 1, "max": MAX_STEPS, "tooltip": "Number of denoising steps."}),
        "cfg": ("FLOAT", {"default": 9.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                          "tooltip": "Classifier-free guidance scale; 1 or less skips the negative prompt."}),
        "sampler_name": (list(SAMPLER_NAMES), {"default": "ddim", "tooltip": "The diffusers scheduler class "
                                               "to sample with (built from the checkpoint's scheduler config)."}),
        "scheduler": (list(SCHEDULER_NAMES), {"default": "normal", "tooltip": "normal: the checkpoint's "
                                              "timestep spacing; karras: Karras sigmas (not for ddim, ddpm, "
                                              "pndm, euler_ancestral)."}),
    }


def check_sampler_choice(node: str, sampler_name: str, scheduler: str, partial: bool,
                         scheduler_config: dict | None = None) -> None:
    problem = karras_problem(sampler_name, scheduler)
    if problem:
        raise NodeInputError(node, "scheduler", problem)
    problem = timestep_problem(sampler_name, scheduler_config or {})
    if problem:
        raise NodeInputError(node, "sampler_name", problem)
    if partial and SAMPLERS[sampler_name].full_schedule_only:
        raise NodeInputError(node, "sampler_name", f"'{sampler_name}' can only run a whole schedule (its warm-up "
                             "cannot start mid-way); use another sampler for denoise < 1 or start/end steps")


def check_step_range(start_step: int, end_step: int, steps: int) -> None:
    if start_step >= steps:
        raise NodeInputError(NODE, "start_step", f"{start_step} is past the last step ({steps} steps run 0 to "
                                                 f"{steps - 1}); lower it or raise steps")
    if start_step > end_step:
        raise NodeInputError(NODE, "end_step", f"{end_step} is before start_step {start_step}; a run needs "
                                               "end_step >= start_step")


class T2VSampler:
    DESCRIPTION = ("Denoises a video latent. denoise = 1 generates from noise (the input only gives the shape); "
                   "denoise < 1 keeps the last steps*denoise steps and noises the input to where they start, like "
                   "diffusers' strength (not KSampler's stretched schedule). start_step/end_step split one run "
                   "across several samplers; a split run continues exactly where it stopped.")
    CATEGORY = "Text2Video/sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("T2V_MODEL", {"tooltip": "The denoiser from T2VModelLoader (or a patch node)."}),
                "positive": ("CONDITIONING", {"tooltip": "What the video should show."}),
                "negative": ("CONDITIONING", {"tooltip": "What to steer away from (unused when cfg <= 1)."}),
                "latent": ("LATENT", {"tooltip": "Video latent: its shape, and its content when denoise < 1."}),
                **sampler_inputs(),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "Share of the steps that run (diffusers' strength): 1 starts from "
                                                 "noise, 0.6 keeps 60% of the input's structure less."}),
            },
            "optional": {
                "eta": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "DDIM eta: 0 is deterministic, 1 is DDPM-like noise (ddim only)."}),
                "start_step": ("INT", {"default": 0, "min": 0, "max": MAX_STEPS,
                                       "tooltip": "First step to run (0 = from the start)."}),
                "end_step": ("INT", {"default": MAX_STEPS, "min": 0, "max": MAX_STEPS,
                                     "tooltip": "Step to stop before (>= steps = to the end)."}),
                "add_noise": ("BOOLEAN", {"default": True, "tooltip": "Off: the input is already noisy (the "
                                          "output of a sampler that stopped early); no noise is added."}),
                "return_with_leftover_noise": ("BOOLEAN", {
                    "default": False, "tooltip": "On: a run that stops early returns the noisy latent (to "
                                                 "continue in another sampler); off: its denoised estimate."}),
                "frame_noise": (list(FRAME_NOISE), {
                    "default": "per_video", "tooltip": "How a run from noise draws it: per_video as text-to-video "
                    "pipelines, per_frame as image pipelines on a batch of frames (Video InstructPix2Pix), shared: "
                    "one noise image for every frame (the ControlNet video recipe). Image models only."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, cfg=None, denoise=None, eta=None):
        return validation_verdict(lambda: check_widget_values(cls, cfg=cfg, denoise=denoise, eta=eta))

    def sample(self, model, positive, negative, latent, seed, steps, cfg, sampler_name, scheduler, denoise,
               eta=0.0, start_step=0, end_step=MAX_STEPS, add_noise=True, return_with_leftover_noise=False,
               frame_noise="per_video"):
        check_widget_values(T2VSampler, cfg=cfg, denoise=denoise, eta=eta)
        plan = SamplingPlan(sampler_name, scheduler, steps, denoise, start_step, end_step, add_noise,
                            return_with_leftover_noise, eta, frame_noise=frame_noise)
        if frame_noise != "per_video" and not model.family.image_model:
            raise NodeInputError(NODE, "frame_noise", f"'{frame_noise}' is for image models sampling frames as a "
                                 f"batch; '{model.name}' is a {model.family.description} model: use per_video")
        check_sampler_choice(NODE, sampler_name, scheduler,
                             partial=plan.first_step > 0 or plan.last_step < steps,
                             scheduler_config=model.scheduler_config)
        check_step_range(start_step, end_step, steps)
        samples = video_latents(NODE, "latent", latent, model.device)
        check_latent_channels(NODE, "latent", samples, model)
        check_control_frames(NODE, positive + negative, samples.shape[2], model)
        check_frame_limit(NODE, "latent", samples.shape[2], model)
        check_free_init(NODE, model, plan)
        state = latent.get(RESUME_KEY)
        if state is not None and not add_noise and state.next_step == plan.first_step:
            problem = state.mismatch(plan, samples.shape)
            if problem:
                raise NodeInputError(NODE, "latent", f"it comes from a sampler that stopped at step {state.next_step}, "
                                                     f"but {problem}")
        positive, negative = guidance_conditioning(NODE, positive, negative, cfg, model)
        memory = explain_out_of_memory(NODE, f"sampling {samples.shape[2]} frames",
                                       sampling_memory_options(model, samples.shape[2]))
        passes_steps = model.free_init.total_steps(steps) if model.free_init else None
        with memory, StepProgress(NODE, passes_steps) as progress:
            out, state = sample_model(model, positive, negative, cfg, samples, plan,
                                      seeded_generator(seed), state, progress)
        result = {key: value for key, value in latent.items() if key not in ("samples", RESUME_KEY)}
        result["samples"] = out
        if state is not None:
            result[RESUME_KEY] = state
        return (result,)


NODE_CLASS_MAPPINGS = {"T2VSampler": T2VSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"T2VSampler": "Text2Video Sampler"}
