"""What every model family describes; the defaults are a single-CLIP latent diffusion model (Stable Diffusion 1.x/2.x)."""

from __future__ import annotations

import dataclasses

import torch

from ...samplers.guidance import Condition, Control, Guidance
from ..text_encoding import run_text_encoder


CONTROL_KEY = "t2v_control"
"""The pack's conditioning key for attached ControlNets (`T2VApplyControlNet`): a tuple of specs with
`controlnet`, `images`, `strength`, `start`, `end`, applied together (stacked ControlNets add up)."""


@dataclasses.dataclass(frozen=True)
class TextEncoderSlot:
    """A tokenizer + text encoder pair of a diffusers folder: the component folders and the encoder's class."""

    tokenizer: str
    encoder: str
    encoder_class: str = "CLIPTextModel"


class ModelFamily:
    """One kind of diffusers model: how its folder is recognised, what it loads, how it is conditioned and called.

    Stateless: one instance per family (see `families.FAMILIES`); handles carry it, and samplers, guidance and
    nodes ask it instead of testing model classes.
    """

    name = "stable_diffusion"
    description = "Stable Diffusion 1.x/2.x"
    unet_class = "UNet2DConditionModel"
    text_encoders: tuple[TextEncoderSlot, ...] = (TextEncoderSlot("tokenizer", "text_encoder"),)
    video_unet = False  # the UNet takes video latents [B, C, F, h, w]; otherwise the frames are its batch
    concat_channels = 0  # channels of image latents joined to the UNet's input (InstructPix2Pix: 4)

    def __repr__(self) -> str:
        return f"<model family {self.name}>"

    def matches(self, index: dict, unet_config: dict) -> bool:
        """Whether a folder with this `model_index.json` and UNet config belongs to the family."""
        return unet_config.get("_class_name") == self.unet_class

    @property
    def components(self) -> tuple[str, ...]:
        """The component folders a model of the family needs."""
        text = tuple(name for slot in self.text_encoders for name in (slot.tokenizer, slot.encoder))
        return ("unet", "vae", *text, "scheduler")

    @property
    def image_model(self) -> bool:
        """An image UNet that samples frames as a batch: Text2Video-Zero and cross-frame attention apply."""
        return not self.video_unet

    def latent_channels(self, unet_config) -> int:
        """Channels of the latents the model denoises (the UNet's input less any concatenated image latents)."""
        return int(unet_config.in_channels) - self.concat_channels

    def encode_text(self, clip, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """`(embeds [1, L, D], pooled [1, P])` of one prompt, as diffusers' `encode_prompt` for the family."""
        (tokenizer, encoder), = clip.encoders
        output = run_text_encoder(clip, tokenizer, encoder, text)
        return output[0], output[1]

    def conditioning_problem(self, meta: dict) -> str | None:
        """Why a core CONDITIONING entry with this metadata cannot condition the family's UNet, or None."""
        if self.concat_channels == 0 and meta.get("concat_latent_image") is not None:
            return (f"it carries image latents for an InstructPix2Pix model (8 input channels), but this is a "
                    f"{self.description} model; load an InstructPix2Pix model")
        return None

    def condition(self, embeds: torch.Tensor, meta: dict, latent_shape: tuple, spatial_scale: int) -> Condition:
        """One core CONDITIONING entry as the UNet takes it, for latents of `latent_shape` `[B, C, F, h, w]`."""
        return Condition(embeds)

    def entries(self, conditioning, latent_shape: tuple, spatial_scale: int, controls: dict) -> list[Condition]:
        """Core CONDITIONING entries as the UNet takes them, with their ControlNets (`controls` shares each
        attached ControlNet between the entries that carry it, so it runs once per step)."""
        return [dataclasses.replace(self.condition(embeds, meta, latent_shape, spatial_scale),
                                    controls=tuple(_control(spec, latent_shape, spatial_scale, controls)
                                                   for spec in meta.get(CONTROL_KEY, ())))
                for embeds, meta in conditioning]

    def guidance(self, positive, negative, cfg: float, latent_shape: tuple, spatial_scale: int) -> Guidance:
        """The sampler's guidance for core CONDITIONING `positive`/`negative` on latents of `latent_shape`."""
        controls = {}
        return Guidance(self.entries(positive, latent_shape, spatial_scale, controls),
                        self.entries(negative, latent_shape, spatial_scale, controls) if cfg > 1.0 else [], cfg)


def _control(spec, latent_shape: tuple, spatial_scale: int, made: dict) -> Control:
    """The sampler's `Control` for an attached ControlNet: its frames `[N, 3, H, W]` at the frame size
    (resized as diffusers resizes tensors: nearest), on the ControlNet's device."""
    if id(spec) not in made:
        spec.controlnet.load_for_use()
        size = (latent_shape[-2] * spatial_scale, latent_shape[-1] * spatial_scale)
        images = spec.images.permute(0, 3, 1, 2).to(spec.controlnet.device, torch.float32)
        if tuple(images.shape[-2:]) != size:
            images = torch.nn.functional.interpolate(images, size=size)
        made[id(spec)] = Control(spec.controlnet.module, images, spec.strength, spec.start, spec.end)
    return made[id(spec)]
