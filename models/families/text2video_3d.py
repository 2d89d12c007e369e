"""3D-UNet text-to-video (ModelScope text-to-video-ms-1.7b, zeroscope): video latents straight into the UNet."""

from __future__ import annotations

from .base import ModelFamily


class Text2Video3D(ModelFamily):
    name = "text2video_3d"
    description = "3D-UNet text-to-video (ModelScope, zeroscope)"
    unet_class = "UNet3DConditionModel"
    video_unet = True


TEXT2VIDEO_3D = Text2Video3D()
