"""What flows through the pack's model sockets: `T2V_MODEL`, `T2V_CLIP`, `T2V_VAE`."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

import torch

from .families import ModelFamily
from .families.sd import STABLE_DIFFUSION

if TYPE_CHECKING:
    from ..bridge import ManagedModule
    from ..samplers.context_windows import ContextOptions
    from ..samplers.free_init import FreeInitOptions


class ModelPatch(Protocol):
    """A change to the denoiser that is installed for one sampling call only."""

    def installed(self, unet: torch.nn.Module, frames_per_group: int):
        """Context manager: install on `unet`, restore the original on exit (also on errors)."""


class _Managed:
    """A handle whose weights the host may offload between uses."""

    managed: ManagedModule | None

    def load_for_use(self) -> None:
        """Make sure the weights are on `device` (ComfyUI may have offloaded them); call right before running."""
        if self.managed is not None:
            self.managed.load_for_use()


@dataclasses.dataclass(frozen=True)
class ModelHandle(_Managed):
    """`T2V_MODEL`: a denoiser and what sampling needs to know about it.

    Frozen: nodes never mutate a handle; `with_patch` returns a clone that shares the weights.
    """

    name: str
    unet: torch.nn.Module
    family: ModelFamily  # what kind of model it is: how it is conditioned and called
    scheduler_config: dict
    dtype: torch.dtype
    device: torch.device
    latent_scale: float  # the VAE's scaling factor: LATENTs hold raw VAE latents, the UNet sees them scaled
    spatial_scale: int = 8  # pixels per latent cell (the VAE's downsampling)
    patches: tuple[ModelPatch, ...] = ()
    managed: ManagedModule | None = None  # the UNet under the host's memory management (None: built by hand)
    context_windows: ContextOptions | None = None  # every model call runs on windows of frames (T2VContextWindows)
    free_init: FreeInitOptions | None = None  # sampling from noise repeats with FreeInit's re-initialisation

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet.config.cross_attention_dim)

    @property
    def latent_channels(self) -> int:
        return self.family.latent_channels(self.unet.config)

    def guidance(self, positive, negative, cfg: float, latent_shape: tuple):
        """The sampler's guidance (`samplers.guidance.Guidance`) for these conditionings on latents of that shape."""
        return self.family.guidance(positive, negative, cfg, latent_shape, self.spatial_scale)

    def with_patch(self, patch: ModelPatch) -> "ModelHandle":
        return dataclasses.replace(self, patches=self.patches + (patch,))

    def with_context_windows(self, options: ContextOptions) -> "ModelHandle":
        return dataclasses.replace(self, context_windows=options)

    def with_free_init(self, options: FreeInitOptions) -> "ModelHandle":
        return dataclasses.replace(self, free_init=options)

    @contextlib.contextmanager
    def patched(self, frames_per_group: int, also: tuple[torch.nn.Module, ...] = ()):
        """The UNet, loaded for use, with this handle's patches installed for the duration (removed on any exit);
        patches with `patches_controlnets` set go on the modules `also` (ControlNets that run beside it) too."""
        self.load_for_use()
        with contextlib.ExitStack() as stack:
            for patch in self.patches:
                for module in (self.unet, *(also if getattr(patch, "patches_controlnets", False) else ())):
                    stack.enter_context(patch.installed(module, frames_per_group))
            yield self.unet


@dataclasses.dataclass(frozen=True)
class TextEncoder:
    """A further tokenizer + text encoder of a `T2V_CLIP` (SDXL's second one)."""

    tokenizer: Any
    text_encoder: torch.nn.Module
    managed: ManagedModule | None = None


@dataclasses.dataclass(frozen=True)
class ClipHandle(_Managed):
    """`T2V_CLIP`: a CLIP tokenizer and text encoder (plus further ones for SDXL), encoding as their family does."""

    name: str
    tokenizer: Any
    text_encoder: torch.nn.Module
    device: torch.device
    managed: ManagedModule | None = None  # the text encoder under the host's memory management
    family: ModelFamily = STABLE_DIFFUSION
    more_encoders: tuple[TextEncoder, ...] = ()

    @property
    def encoders(self) -> list[tuple[Any, torch.nn.Module]]:
        """Every `(tokenizer, text_encoder)` pair, in the family's order."""
        return [(self.tokenizer, self.text_encoder), *((e.tokenizer, e.text_encoder) for e in self.more_encoders)]

    def load_for_use(self) -> None:
        super().load_for_use()
        for encoder in self.more_encoders:
            if encoder.managed is not None:
                encoder.managed.load_for_use()


@dataclasses.dataclass(frozen=True)
class VaeTiling:
    """Frames larger than `size` pixels go through the VAE in tiles of `size` that overlap by `overlap` pixels,
    blended linearly across the overlap (diffusers' VAE tiling)."""

    size: int
    overlap: int


@dataclasses.dataclass(frozen=True)
class VaeHandle(_Managed):
    """`T2V_VAE`: an `AutoencoderKL` and its latent scaling."""

    name: str
    vae: torch.nn.Module
    device: torch.device
    managed: ManagedModule | None = None  # the VAE under the host's memory management
    tiling: VaeTiling | None = None  # decode and encode large frames in blended tiles (T2VVAETiling)
    temporal: bool = False  # a temporal decoder (SVD's): the frames of one decode call are decoded together

    def with_tiling(self, tiling: VaeTiling) -> "VaeHandle":
        return dataclasses.replace(self, tiling=tiling)

    @property
    def spatial_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def force_upcast(self) -> bool:
        return bool(getattr(self.vae.config, "force_upcast", False))
