"""Text2Video-Zero: the all-in-one node and its composable parts (cross-frame patch, step split, motion)."""

from __future__ import annotations

from ..attention.cross_frame import CrossFrameAttention
from ..errors import NodeInputError
from ..models.families.base import CONTROL_KEY
from ..samplers.text2video import RESUME_KEY, SamplingPlan, seeded_generator
from ..samplers.schedulers import SAMPLERS
from ..samplers.text2video_zero import (AnchorFrame, motion_latents, schedule_problem, split_steps, text2video_zero,
                                         zero_steps)
from .common import (MAX_FRAMES, MAX_RESOLUTION, StepProgress, check_widget_values, explain_out_of_memory,
                     guidance_conditioning, validation_verdict, video_latents)
from .latent import LATENT_CHANNELS, SPATIAL_SCALE, check_frame_size
from .sampling import MAX_STEPS, check_sampler_choice, sampler_inputs

MOTION = {"default": 12.0, "min": -256.0, "max": 256.0, "step": 0.5}


def motion_inputs() -> dict:
    return {
        "motion_x": ("FLOAT", {**MOTION, "tooltip": "Horizontal motion in pixels per frame on a 512 grid "
                                                    "(positive moves the content left)."}),
        "motion_y": ("FLOAT", {**MOTION, "tooltip": "Vertical motion in pixels per frame on a 512 grid "
                                                    "(positive moves the content up)."}),
    }


def schedule_inputs() -> dict:
    return {
        "t0": ("INT", {"default": 44, "min": 0, "max": MAX_STEPS, "tooltip": "Where the motion is applied, in "
                                                                            "steps before the end (t0 < t1)."}),
        "t1": ("INT", {"default": 47, "min": 1, "max": MAX_STEPS, "tooltip": "Where the moved frames rejoin, in "
                                                                            "steps before the end (t1 < steps)."}),
    }


def check_schedule(node: str, steps: int, t0: int, t1: int) -> None:
    problem = schedule_problem(steps, t0, t1)
    if problem:
        raise NodeInputError(node, "t1" if t0 < t1 else "t0", problem)


def check_image_model(node: str, model) -> None:
    if not model.family.image_model:
        raise NodeInputError(node, "model", f"'{model.name}' is a {model.family.description} model; Text2Video-Zero "
                                            "needs an image model (Stable Diffusion 1.x/2.x or SDXL)")


class T2VCrossFrameAttention:
    DESCRIPTION = ("Patches an image model for Text2Video-Zero: in self-attention every frame attends to the first "
                   "frame of its video, which keeps the appearance steady. Returns a patched copy; the input model "
                   "is unchanged.")
    CATEGORY = "Text2Video/text2video-zero"
    RETURN_TYPES = ("T2V_MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("T2V_MODEL", {"tooltip": "An image (2D UNet) model from T2VModelLoader."})}}

    def patch(self, model):
        check_image_model("T2VCrossFrameAttention", model)
        return (model.with_patch(CrossFrameAttention()),)


class T2VZeroSteps:
    DESCRIPTION = ("Where the samplers of a composed Text2Video-Zero graph stop and start: connect t1_step to the "
                   "first sampler's end_step and the second's start_step, t0_step to the second's end_step, and "
                   "t1_step to the final (cross-frame) sampler's start_step.")
    CATEGORY = "Text2Video/text2video-zero"
    RETURN_TYPES = ("INT", "INT")
    RETURN_NAMES = ("t1_step", "t0_step")
    FUNCTION = "split"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "steps": ("INT", {"default": 50, "min": 2, "max": MAX_STEPS, "tooltip": "The samplers' steps."}),
            **schedule_inputs(),
        }}

    def split(self, steps, t0, t1):
        check_schedule("T2VZeroSteps", steps, t0, t1)
        return split_steps(steps, t0, t1)


def _anchor_state(node: str, input_name: str, latent: dict):
    state = latent.get(RESUME_KEY) if isinstance(latent, dict) else None
    if state is None:
        raise NodeInputError(node, input_name, "this latent carries no sampler state: take it from a T2VSampler that "
                                               "stopped early (end_step) with return_with_leftover_noise on")
    samples = video_latents(node, input_name, latent, latent["samples"].device)
    if samples.shape[2] != 1:
        raise NodeInputError(node, input_name, f"expected the single anchor frame, got {samples.shape[2]} frames")
    return samples, state


class T2VMotionFieldLatent:
    DESCRIPTION = ("Text2Video-Zero's motion step: copies the anchor frame's t0 latent to every frame, shifts copy "
                   "i by i times the motion, re-noises them to t1 and puts the anchor's own t1 latent in front. The "
                   "result continues in a T2VSampler on a T2VCrossFrameAttention model from t1_step.")
    CATEGORY = "Text2Video/text2video-zero"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "move"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent_t1": ("LATENT", {"tooltip": "Frame 0 at t1: the first sampler's output (end_step = t1_step, "
                                                "return_with_leftover_noise on)."}),
            "latent_t0": ("LATENT", {"tooltip": "Frame 0 at t0: the second sampler's output (start_step = t1_step, "
                                                "end_step = t0_step, add_noise off, leftover noise on)."}),
            "frames": ("INT", {"default": 8, "min": 1, "max": MAX_FRAMES, "tooltip": "Frames of the video."}),
            **motion_inputs(),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, motion_x=None, motion_y=None):
        return validation_verdict(lambda: check_widget_values(cls, motion_x=motion_x, motion_y=motion_y))

    def move(self, latent_t1, latent_t0, frames, motion_x, motion_y):
        node = "T2VMotionFieldLatent"
        check_widget_values(T2VMotionFieldLatent, motion_x=motion_x, motion_y=motion_y)
        at_t1, state_t1 = _anchor_state(node, "latent_t1", latent_t1)
        at_t0, state_t0 = _anchor_state(node, "latent_t0", latent_t0)
        if at_t1.shape[0] != 1:
            raise NodeInputError(node, "latent_t1", f"Text2Video-Zero makes one video at a time; got a batch of "
                                                    f"{at_t1.shape[0]} (use batch_size 1)")
        if state_t0.schedule_key != state_t1.schedule_key or state_t0.next_step <= state_t1.next_step:
            raise NodeInputError(node, "latent_t0", "it must continue latent_t1's run (same sampler, scheduler and "
                                                    "steps) and stop later (at t0_step)")
        generator = seeded_generator(0)
        generator.set_state(state_t0.generator_state)
        anchor = AnchorFrame(at_t1, state_t1, at_t0, state_t0)
        samples, state = motion_latents(anchor, list(range(frames)), motion_x, motion_y, generator)
        return ({"samples": samples, RESUME_KEY: state},)


class T2VText2VideoZero:
    DESCRIPTION = ("Text2Video-Zero in one node: any Stable Diffusion image model makes a video without training. "
                   "Frame 0 is denoised to t0, moved by the motion for the other frames, re-noised to t1 and all "
                   "frames finish together with cross-frame attention. chunk_size > 0 makes long videos in chunks "
                   "with flat memory.")
    CATEGORY = "Text2Video/text2video-zero"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        inputs = sampler_inputs()
        inputs["steps"][1]["default"] = 50
        inputs["cfg"][1]["default"] = 7.5
        return {"required": {
            "model": ("T2V_MODEL", {"tooltip": "An image (2D UNet, Stable Diffusion) model from T2VModelLoader."}),
            "positive": ("CONDITIONING", {"tooltip": "What the video should show."}),
            "negative": ("CONDITIONING", {"tooltip": "What to steer away from (unused when cfg <= 1)."}),
            **inputs,
            "width": ("INT", {"default": 512, "min": 8, "max": MAX_RESOLUTION, "step": 8,
                              "tooltip": "Frame width in pixels, a multiple of 8."}),
            "height": ("INT", {"default": 512, "min": 8, "max": MAX_RESOLUTION, "step": 8,
                               "tooltip": "Frame height in pixels, a multiple of 8."}),
            "frames": ("INT", {"default": 8, "min": 1, "max": MAX_FRAMES, "tooltip": "Frames of the video."}),
            **motion_inputs(),
            **schedule_inputs(),
            "chunk_size": ("INT", {"default": 0, "min": 0, "max": MAX_FRAMES,
                                   "tooltip": "0: all frames at once. Otherwise frames per chunk including the "
                                              "anchor frame (at least 2): memory stays flat for long videos."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, cfg=None, motion_x=None, motion_y=None):
        return validation_verdict(lambda: check_widget_values(cls, cfg=cfg, motion_x=motion_x, motion_y=motion_y))

    def generate(self, model, positive, negative, seed, steps, cfg, sampler_name, scheduler, width, height, frames,
                 motion_x, motion_y, t0, t1, chunk_size):
        node = "T2VText2VideoZero"
        check_widget_values(T2VText2VideoZero, cfg=cfg, motion_x=motion_x, motion_y=motion_y)
        check_image_model(node, model)
        check_schedule(node, steps, t0, t1)
        check_sampler_choice(node, sampler_name, scheduler, partial=True)
        if chunk_size == 1:
            raise NodeInputError(node, "chunk_size", "1 leaves no room beside the anchor frame; use 0 (no chunks) "
                                                     "or at least 2")
        check_frame_size(node, width, height)
        if any(CONTROL_KEY in meta for _embeds, meta in positive):
            raise NodeInputError(node, "positive", "it carries a ControlNet; for controlled video use the "
                                                   "ControlNet graph (T2VCrossFrameAttention, T2VSampler with "
                                                   "frame_noise shared)")
        positive, negative = guidance_conditioning(node, positive, negative, cfg, model)
        shape = (1, LATENT_CHANNELS, 1, height // SPATIAL_SCALE, width // SPATIAL_SCALE)
        plan = SamplingPlan(sampler_name, scheduler, steps)
        model_calls = SAMPLERS[sampler_name].scheduler_class.order * zero_steps(steps, t0, t1, frames, chunk_size)
        fits = ["set chunk_size to 8 or so (memory then stays flat however many frames)" if not chunk_size else
                f"lower chunk_size (now {chunk_size})", "make the frames smaller"]
        with explain_out_of_memory(node, f"making {frames} frames", fits), StepProgress(node, model_calls) as progress:
            samples = text2video_zero(model, model.with_patch(CrossFrameAttention()),
                                      positive, negative,
                                      cfg, shape, plan, t0, t1, frames, motion_x, motion_y, chunk_size, seed, progress)
        return ({"samples": samples},)


NODE_CLASS_MAPPINGS = {
    "T2VText2VideoZero": T2VText2VideoZero,
    "T2VCrossFrameAttention": T2VCrossFrameAttention,
    "T2VZeroSteps": T2VZeroSteps,
    "T2VMotionFieldLatent": T2VMotionFieldLatent,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "T2VText2VideoZero": "Text2Video-Zero",
    "T2VCrossFrameAttention": "Cross-Frame Attention (Text2Video-Zero)",
    "T2VZeroSteps": "Text2Video-Zero Steps",
    "T2VMotionFieldLatent": "Motion Field Latent (Text2Video-Zero)",
}
