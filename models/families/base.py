"""What every model family describes; the defaults are a single-CLIP latent diffusion model (Stable Diffusion 1.x/2.x)."""

from __future__ import annotations

import dataclasses

import torch

from ...samplers.guidance import Condition, Control, Guidance
from ..text_encoding import run_text_encoder


I2VGEN_IMAGE_LATENTS = "t2v_i2vgen_image_latents"
"""The pack's conditioning key for I2VGen-XL's image latents (`T2VI2VGenXLConditioning`), scaled, `[1, C, h, w]`."""

CONTROL_KEY = "t2v_control"
"""The pack's conditioning key for attached ControlNets (`T2VApplyControlNet`): a tuple of specs with
`controlnet`, `images`, `strength`, `start`, `end`, applied together (stacked ControlNets add up)."""


@dataclasses.dataclass(frozen=True)
class TextEncoderSlot:
    """A tokenizer + text encoder pair of a diffusers folder: the component folders and the encoder's class
    (for an image encoder, `tokenizer` is its image processor's folder and `processor_class` that class)."""

    tokenizer: str
    encoder: str
    encoder_class: str = "CLIPTextModel"
    processor_class: str = "CLIPTokenizer"


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
    steps_on_video = False  # the reference steps its scheduler on [B, C, F, h, w], not on the frames [B*F, C, h, w]
    context_per_frame = False  # the UNet takes the text embedding once per frame (AnimateDiff's motion UNet)
    vae_class = "AutoencoderKL"
    temporal_vae = False  # its VAE decodes a chunk of frames together (`num_frames`): SVD's temporal decoder
    encodes_text = True  # its T2V_CLIP is a text encoder (SVD's is a CLIP image encoder)
    video_noise = "per_video"  # the `frame_noise` layout its reference draws a video's noise in (FRAME_NOISE)
    context_windows = True  # T2VContextWindows can run it

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

    def frame_limit(self, unet_config) -> int | None:
        """The most frames one model call can take (a motion module's positional table), or None for no limit."""
        return None

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
        if meta.get(I2VGEN_IMAGE_LATENTS) is not None:
            return (f"it is I2VGen-XL image conditioning (T2VI2VGenXLConditioning), but this is a {self.description} "
                    "model; sample it with the I2VGen-XL model")
        if meta.get("motion_bucket_id") is not None:
            return (f"it is Stable Video Diffusion image conditioning (T2VSVDConditioning), but this is a "
                    f"{self.description} model; load a Stable Video Diffusion model")
        if self.concat_channels == 0 and meta.get("concat_latent_image") is not None:
            return (f"it carries image latents for an InstructPix2Pix model (8 input channels), but this is a "
                    f"{self.description} model; load an InstructPix2Pix model")
        return None

    def denoiser(self, unet: torch.nn.Module):
        """The UNet as the sampler calls it: `(sample [N, C, F, h, w] or [N, C, h, w], t, encoder_hidden_states=,
        added_cond_kwargs=, return_dict=False)`; most families' UNets take that as they are."""
        return unet

    def draws_before_noise(self, latent_shape: tuple, spatial_scale: int) -> tuple[tuple, ...]:
        """Shapes of the random draws the family's reference makes from the seed's generator before the initial
        noise, which its conditioning node made from its own seed: the sampler draws them too, to stay in step."""
        return ()

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
