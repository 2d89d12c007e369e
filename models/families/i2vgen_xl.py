"""I2VGen-XL: a 3D UNet conditioned on text, on the CLIP embedding of an image and on its VAE latents."""

from __future__ import annotations

import torch

from ...samplers.guidance import Condition
from ..text_encoding import run_text_encoder
from .base import I2VGEN_IMAGE_LATENTS as IMAGE_LATENTS
from .base import ModelFamily, TextEncoderSlot

IMAGE_EMBEDS = "t2v_i2vgen_image_embeds"
"""The pack's conditioning key for the image's CLIP embedding `[1, 1, D]` (zeros in the negative)."""
TARGET_FPS = "t2v_target_fps"
"""The pack's conditioning key for the frame rate the UNet is conditioned on."""


def image_latent_video(image_latents: torch.Tensor, frames: int) -> torch.Tensor:
    """The UNet's image input `[1, C, F, h, w]`: the image's latents as frame 0, then for frame `i` a constant
    `i / (F - 1)` (the reference's frame-position masks)."""
    first = image_latents.unsqueeze(2)
    masks = [torch.ones_like(first) * ((index + 1) / (frames - 1)) for index in range(frames - 1)]
    return torch.cat([first, *masks], dim=2)


def to_pil(image: torch.Tensor):
    """The first IMAGE of `[N, H, W, 3]` as an 8-bit PIL image (rounded, as diffusers converts tensors)."""
    from PIL import Image

    return Image.fromarray((image[0].float().cpu() * 255).round().clamp(0, 255).to(torch.uint8).numpy())


def from_pil(image) -> torch.Tensor:
    """An 8-bit PIL image as IMAGE `[1, H, W, 3]` in 0..1."""
    import numpy as np

    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).unsqueeze(0)


def centre_crop_wide(image, width: int, height: int):
    """The reference's crop to `width` x `height`: box-filtered down by the smaller of the two size ratios (sizes
    floored), then the centre cut out."""
    from PIL import Image

    ratio = min(image.width / width, image.height / height)
    image = image.resize((round(image.width // ratio), round(image.height // ratio)), resample=Image.Resampling.BOX)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


class _ImageConditionedUNet:
    """I2VGen-XL's UNet behind the sampler's call: the image latents, image embedding and fps come as
    `added_cond_kwargs` and go in as the UNet's own arguments."""

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet

    def __call__(self, sample, timestep, encoder_hidden_states, added_cond_kwargs, return_dict=False):
        return self.unet(sample, timestep, fps=added_cond_kwargs["fps"],
                         image_latents=added_cond_kwargs["image_latents"],
                         image_embeddings=added_cond_kwargs["image_embeddings"],
                         encoder_hidden_states=encoder_hidden_states, return_dict=False)


class I2VGenXL(ModelFamily):
    """As diffusers' `I2VGenXLPipeline`: prompts encoded with `clip_skip=1` (the penultimate layer through the final
    layer norm); the image's CLIP embedding (zeros for the negative), its scaled VAE latents with the frame-position
    masks (the same for both) and the target fps go into the UNet beside the noisy video."""

    name = "i2vgen_xl"
    description = "I2VGen-XL (image-to-video 3D UNet)"
    unet_class = "I2VGenXLUNet"
    text_encoders = (TextEncoderSlot("tokenizer", "text_encoder"),
                     TextEncoderSlot("feature_extractor", "image_encoder", "CLIPVisionModelWithProjection",
                                     "CLIPImageProcessor"))
    video_unet = True
    context_windows = False  # its image latents and frame-position masks describe the whole video

    def encode_text(self, clip, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        (tokenizer, encoder), _image = clip.encoders
        output = run_text_encoder(clip, tokenizer, encoder, text, hidden_states=True)
        final_norm = getattr(encoder, "text_model", encoder).final_layer_norm  # transformers 4 nests it, 5 does not
        with torch.no_grad():
            return final_norm(output.hidden_states[-2]), output[1]

    def encode_image(self, clip, image: torch.Tensor, width: int) -> torch.Tensor:
        """The CLIP image embedding `[1, 1, D]` of one IMAGE `[1, H, W, 3]`, prepared as the reference prepares it:
        8 bits per channel, centre-cropped to a `width` square (box-filtered down first), resized bilinearly to the
        image processor's crop size, normalised by its mean and deviation."""
        from PIL import Image

        clip.load_for_use()
        (_tokenizer, _text), (processor, encoder) = clip.encoders
        size = (int(processor.crop_size["width"]), int(processor.crop_size["height"]))
        square = centre_crop_wide(to_pil(image), width, width).resize(size, Image.Resampling.BILINEAR)
        pixels = from_pil(square).permute(0, 3, 1, 2).to(clip.device)
        mean = torch.tensor(processor.image_mean, device=clip.device).view(1, -1, 1, 1)
        std = torch.tensor(processor.image_std, device=clip.device).view(1, -1, 1, 1)
        with torch.no_grad():
            embeds = encoder(((pixels - mean) / std).to(encoder.dtype)).image_embeds
        return embeds.float().unsqueeze(1)

    def conditioning_problem(self, meta: dict) -> str | None:
        if any(meta.get(key) is None for key in (IMAGE_LATENTS, IMAGE_EMBEDS, TARGET_FPS)):
            return ("an I2VGen-XL model animates an image: pass the conditioning through T2VI2VGenXLConditioning "
                    "with the image")
        return None

    def denoiser(self, unet: torch.nn.Module):
        return _ImageConditionedUNet(unet)

    def condition(self, embeds: torch.Tensor, meta: dict, latent_shape: tuple, spatial_scale: int) -> Condition:
        image = meta[IMAGE_LATENTS].to(embeds.device, torch.float32)
        if tuple(image.shape[-2:]) != tuple(latent_shape[-2:]):
            raise ValueError(f"the image latents are {tuple(image.shape[-2:])} (h, w) but the latent is "
                             f"{tuple(latent_shape[-2:])}; sample the LATENT that T2VI2VGenXLConditioning made")
        added = {"image_latents": image_latent_video(image, latent_shape[2]),
                 "image_embeddings": meta[IMAGE_EMBEDS].to(embeds.device, torch.float32),
                 "fps": torch.tensor([float(meta[TARGET_FPS])], device=embeds.device)}
        return Condition(embeds, added)


I2VGEN_XL = I2VGenXL()
