"""Text2Video-Zero on ComfyUI's own models: a cross-frame patch for a core MODEL, its schedule and motion latents.

With these three nodes core loaders, LoRA loaders, ControlNets and `KSamplerAdvanced` make a Text2Video-Zero
video: one sampler takes frame 0 to `t1`, a second on to `t0`, `T2VZeroMotionLatent` moves copies of it and
re-noises them to `t1`, and a third sampler on the patched model finishes all frames (the latent batch).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from .. import bridge
from ..attention.cross_frame import CrossFrameAttn1Patch, anchored_self_attention_hook
from ..errors import NodeInputError
from ..samplers.text2video import randn, seeded_generator
from ..samplers.text2video_zero import moved_copies, renoise_sigma, split_steps
from .common import MAX_FRAMES, MAX_SEED, check_widget_values, validation_verdict
from .sampling import MAX_STEPS
from .text2video_zero import check_schedule, motion_inputs, schedule_inputs

CATEGORY = "Text2Video/text2video-zero"
SCHEDULE_TYPE = "T2V_ZERO_SCHEDULE"


def check_core_model(node: str, model) -> None:
    problem = bridge.core_model_problem(model)
    if problem:
        raise NodeInputError(node, "model", problem)


class T2VCrossFrameAttentionModel:
    DESCRIPTION = ("Text2Video-Zero's cross-frame attention on a ComfyUI model (SD 1.x/2.x/SDXL checkpoints, with "
                   "LoRAs applied before or after): in every self-attention the frames of the latent batch attend "
                   "to the batch's first frame, separately for each guidance branch (cond, uncond), also in the "
                   "self-attention of core ControlNets applied to its conditionings. Returns a patched copy; the "
                   "input model and the ControlNets are unchanged.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "A Stable Diffusion model from a core loader "
                                                            "(CheckpointLoaderSimple, UNETLoader, LoraLoader...)."})}}

    def patch(self, model):
        check_core_model("T2VCrossFrameAttentionModel", model)
        patched = bridge.core_model_with_attn1_patch(model, CrossFrameAttn1Patch())
        return (bridge.core_model_with_controlnet_attn1_hook(patched, anchored_self_attention_hook),)


@dataclasses.dataclass(frozen=True)
class ZeroSchedule:
    """Where a Text2Video-Zero run splits its samplers' schedule, and the noise levels there."""

    steps: int
    t1_step: int
    t0_step: int
    sigma_t1: float
    sigma_t0: float
    latent_in: Callable[[torch.Tensor], torch.Tensor]
    latent_out: Callable[[torch.Tensor], torch.Tensor]


class T2VZeroSchedule:
    DESCRIPTION = ("Plans a Text2Video-Zero run with core samplers. Use the same sampler_name and scheduler in the "
                   "three KSamplerAdvanced nodes and connect: steps to all three; t1_step to the first's "
                   "end_at_step, the second's start_at_step and the third's start_at_step; t0_step to the second's "
                   "end_at_step; schedule to T2VZeroMotionLatent.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (SCHEDULE_TYPE, "INT", "INT", "INT")
    RETURN_NAMES = ("schedule", "steps", "t1_step", "t0_step")
    FUNCTION = "plan"

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedulers = bridge.core_sampler_choices()
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model the samplers use (its noise schedule sets the noise levels)."}),
            "steps": ("INT", {"default": 50, "min": 2, "max": MAX_STEPS, "tooltip": "The samplers' steps."}),
            "sampler_name": (samplers, {"tooltip": "The samplers' sampler_name (some change the noise levels). A "
                                                   "deterministic one (euler, ddim, dpmpp_2m...) keeps frame 0 equal to "
                                                   "a plain KSampler image."}),
            "scheduler": (schedulers, {"tooltip": "The samplers' scheduler."}),
            **schedule_inputs(),
        }}

    def plan(self, model, steps, sampler_name, scheduler, t0, t1):
        node = "T2VZeroSchedule"
        check_core_model(node, model)
        check_schedule(node, steps, t0, t1)
        t1_step, t0_step = split_steps(steps, t0, t1)
        sigmas = bridge.core_sigmas(model, steps, sampler_name, scheduler)
        latent_format = bridge.core_latent_format(model)
        schedule = ZeroSchedule(steps, t1_step, t0_step, float(sigmas[t1_step]), float(sigmas[t0_step]),
                                latent_format.process_in, latent_format.process_out)
        return schedule, steps, t1_step, t0_step


def _anchor_frame(node: str, input_name: str, latent) -> torch.Tensor:
    """Frame 0 of a core LATENT, `[1, C, h, w]`."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        raise NodeInputError(node, input_name, "expected a core image LATENT [batch, channels, height, width] from "
                                               "KSamplerAdvanced")
    if samples.shape[0] != 1:
        raise NodeInputError(node, input_name, f"expected frame 0 alone (a batch of 1), got a batch of "
                                               f"{samples.shape[0]}; sample frame 0 from an EmptyLatentImage of batch 1")
    return samples.float()


class T2VZeroMotionLatent:
    DESCRIPTION = ("Text2Video-Zero's motion step on core latents: frame 0 at t1, then copies of frame 0 at t0 shifted "
                   "by 1, 2, ... times the motion and re-noised to t1 (in the model's sigma space). The result is the "
                   "video latent (frames as the batch) for the last KSamplerAdvanced, which starts at t1_step on a "
                   "T2VCrossFrameAttentionModel model with add_noise disabled.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "move"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "schedule": (SCHEDULE_TYPE, {"tooltip": "From T2VZeroSchedule."}),
            "latent_t1": ("LATENT", {"tooltip": "Frame 0 at t1: the first KSamplerAdvanced (end_at_step = t1_step, "
                                                "return_with_leftover_noise enabled)."}),
            "latent_t0": ("LATENT", {"tooltip": "Frame 0 at t0: the second KSamplerAdvanced (add_noise disabled, "
                                                "start_at_step = t1_step, end_at_step = t0_step, leftover noise "
                                                "enabled)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                             "tooltip": "Seed of the re-noising noise."}),
            "frames": ("INT", {"default": 8, "min": 1, "max": MAX_FRAMES, "tooltip": "Frames of the video."}),
            **motion_inputs(),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, motion_x=None, motion_y=None):
        return validation_verdict(lambda: check_widget_values(cls, motion_x=motion_x, motion_y=motion_y))

    def move(self, schedule, latent_t1, latent_t0, seed, frames, motion_x, motion_y):
        node = "T2VZeroMotionLatent"
        check_widget_values(T2VZeroMotionLatent, motion_x=motion_x, motion_y=motion_y)
        if not isinstance(schedule, ZeroSchedule):
            raise NodeInputError(node, "schedule", "connect the schedule output of T2VZeroSchedule")
        at_t1 = _anchor_frame(node, "latent_t1", latent_t1)
        at_t0 = _anchor_frame(node, "latent_t0", latent_t0).to(at_t1.device)
        if at_t0.shape != at_t1.shape:
            raise NodeInputError(node, "latent_t0", f"its shape {tuple(at_t0.shape)} differs from latent_t1's "
                                                    f"{tuple(at_t1.shape)}; both must be frame 0 of the same run")
        moved = moved_copies(schedule.latent_in(at_t0)[0], list(range(frames)), motion_x, motion_y)
        noise = randn(moved.shape, seeded_generator(seed), moved.device)
        renoised = schedule.latent_out(renoise_sigma(moved, schedule.sigma_t0, schedule.sigma_t1, noise))
        return ({"samples": torch.cat([at_t1, renoised])},)


NODE_CLASS_MAPPINGS = {
    "T2VCrossFrameAttentionModel": T2VCrossFrameAttentionModel,
    "T2VZeroSchedule": T2VZeroSchedule,
    "T2VZeroMotionLatent": T2VZeroMotionLatent,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "T2VCrossFrameAttentionModel": "Cross-Frame Attention for MODEL (Text2Video-Zero)",
    "T2VZeroSchedule": "Text2Video-Zero Schedule for MODEL",
    "T2VZeroMotionLatent": "Text2Video-Zero Motion Latent (core LATENT)",
}
