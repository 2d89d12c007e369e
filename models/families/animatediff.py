"""AnimateDiff: a Stable Diffusion 1.x UNet with a motion adapter's temporal modules (diffusers' `UNetMotionModel`)."""

from __future__ import annotations

from .sd import StableDiffusion


class AnimateDiff(StableDiffusion):
    """As diffusers' `AnimateDiffPipeline` and `AnimateDiffVideoToVideoPipeline`: Stable Diffusion's text encoding;
    the motion UNet takes video latents `[B, C, F, h, w]` with the text embedding repeated once per frame; the
    scheduler steps on the video latents as they are (ancestral noise is drawn in that layout). Video-to-video
    draws as the pack's does: the reference's per-16-frame posterior draws give the same numbers as one draw."""

    name = "animatediff"
    description = "AnimateDiff (Stable Diffusion 1.x with a motion adapter)"
    unet_class = "UNetMotionModel"
    video_unet = True
    steps_on_video = True
    context_per_frame = True

    def matches(self, index: dict, unet_config: dict) -> bool:
        return unet_config.get("_class_name") == self.unet_class

    def frame_limit(self, unet_config) -> int | None:
        return int(unet_config.motion_max_seq_length)


ANIMATEDIFF = AnimateDiff()
