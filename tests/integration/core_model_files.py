"""Model files a user's ComfyUI would hold, built small, for the core-model integration tests.

Run by ComfyUI's interpreter (`COMFYUI_PYTHON core_model_files.py COMFYUI_DIR BASE`): it writes into `BASE/models`
the parts of a Stable Diffusion 1.x checkpoint in the layouts ComfyUI's core loaders read, so that a test can
join them with core `CheckpointSave` into a single-file checkpoint:

- `diffusion_models/t2v-it-sd15.safetensors` and `t2v-it-sd15-ip2p.safetensors` (8 input channels, InstructPix2Pix):
  ComfyUI-format UNets with SD 1.x's widths (320 channels, 768-wide text, 8 heads: what ComfyUI recognises as
  SD 1.x) but only two levels of one block each (43 M parameters);
- `text_encoders/t2v-it-clip-l.safetensors`: a random CLIP ViT-L/14 text encoder (ComfyUI's SD 1.x CLIP has a
  fixed size), in float16;
- `vae/t2v-it-taesd.safetensors`: a random TAESD (ComfyUI's tiny VAE), for speed;
- `loras/t2v-it-lora.safetensors`: a rank-4 LoRA on every attention projection, in ComfyUI's key format;
- `controlnet/t2v-it-controlnet.safetensors`: a ControlNet for that UNet, in the original (ldm) key format.

The UNets start as diffusers `UNet2DConditionModel`s and are converted with ComfyUI's own key map; the diffusers
folders stay in `BASE/diffusers/<name>/unet`, so a check can load the very same weights into diffusers. Prints a
JSON summary (parameter counts) on stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

UNET_NAMES = {"t2v-it-sd15": 4, "t2v-it-sd15-ip2p": 8}
"""File name -> UNet input channels."""
CLIP_NAME, VAE_NAME, LORA_NAME, CONTROLNET_NAME = ("t2v-it-clip-l", "t2v-it-taesd", "t2v-it-lora",
                                                   "t2v-it-controlnet")
LDM_UNET = {"model_channels": 320, "channel_mult": [1, 1], "num_res_blocks": [1, 1], "transformer_depth": [1, 1],
            "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1}
"""The UNet in ComfyUI's terms: two levels of one res block + transformer each, SD 1.x widths."""
LORA_RANK = 4


def diffusers_unet(in_channels: int, seed: int):
    from diffusers import UNet2DConditionModel

    import torch

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1, block_out_channels=(320, 320),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=768, attention_head_dim=8,
        norm_num_groups=32).eval()


def to_ldm(diffusers_state: dict, layout: dict = LDM_UNET) -> dict:
    """diffusers UNet keys -> ComfyUI's (ldm) keys, with ComfyUI's own map for `layout`; every key must be mapped."""
    import comfy.utils

    key_map = comfy.utils.unet_to_diffusers(layout)
    unmapped = sorted(set(diffusers_state) - set(key_map))
    if unmapped:
        raise RuntimeError(f"diffusers keys without an ldm name: {unmapped[:5]}")
    return {key_map[key]: value.contiguous() for key, value in diffusers_state.items()}


def initialise(module) -> None:
    """Run torch's own initialisation on modules built with ComfyUI's ops, which skip it (empty weights)."""
    import torch

    for layer in module.modules():
        for cls in type(layer).__mro__:
            if cls.__module__.startswith("torch.nn") and "reset_parameters" in cls.__dict__:
                cls.reset_parameters(layer)
                break
    for param in module.parameters():  # zero-initialised convolutions (ControlNet) must act too
        if param.ndim >= 2 and not param.any():
            torch.nn.init.normal_(param, 0.0, 0.5 / param[0].numel() ** 0.5)


def clip_l(seed: int) -> dict:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    import comfy.sd1_clip

    torch.manual_seed(seed)
    config = CLIPTextConfig.from_json_file(str(Path(comfy.sd1_clip.__file__).parent / "sd1_clip_config.json"))
    state = CLIPTextModel(config).state_dict()  # transformers 5 drops the "text_model." prefix that CLIP files have
    state = {(key if key.startswith("text_model.") else f"text_model.{key}"): value for key, value in state.items()}
    state["text_projection.weight"] = torch.randn(config.projection_dim, config.hidden_size) / config.hidden_size**0.5
    return {key: value.half() for key, value in state.items()}


def taesd(seed: int) -> dict:
    import torch

    import comfy.taesd.taesd

    torch.manual_seed(seed)
    model = comfy.taesd.taesd.TAESD()
    initialise(model)
    with torch.no_grad():
        model.vae_scale.fill_(1.0)
        model.vae_shift.fill_(0.0)
    return model.state_dict()


def lora(ldm_state: dict, seed: int) -> dict:
    """A LoRA on every attention projection, keyed as ComfyUI reads LoRAs (`lora_unet_<ldm path with _>`)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for key, value in ldm_state.items():
        if ".attn" not in key or not key.endswith(".weight") or value.ndim != 2:
            continue
        name = "lora_unet_" + key[:-len(".weight")].replace(".", "_")
        out_features, in_features = value.shape
        weights[f"{name}.lora_down.weight"] = torch.randn(LORA_RANK, in_features, generator=generator) / in_features**0.5
        weights[f"{name}.lora_up.weight"] = torch.randn(out_features, LORA_RANK, generator=generator) * 0.5
        weights[f"{name}.alpha"] = torch.tensor(float(LORA_RANK))
    return weights


def controlnet(seed: int) -> dict:
    import torch

    import comfy.cldm.cldm

    torch.manual_seed(seed)
    model = comfy.cldm.cldm.ControlNet(
        image_size=32, in_channels=4, model_channels=320, hint_channels=3, num_res_blocks=[1, 1], channel_mult=[1, 1],
        transformer_depth=[1, 1], transformer_depth_middle=1, context_dim=768, num_heads=8, use_spatial_transformer=True,
        use_linear_in_transformer=False, legacy=False, dtype=torch.float32)
    initialise(model)
    return {f"control_model.{key}": value.contiguous() for key, value in model.state_dict().items()}


def build(base: Path) -> dict:
    from safetensors.torch import save_file

    models = base / "models"
    summary = {}
    for seed, (name, in_channels) in enumerate(UNET_NAMES.items(), start=11):
        unet = diffusers_unet(in_channels, seed)
        unet.save_pretrained(base / "diffusers" / name / "unet", safe_serialization=True)
        ldm_state = to_ldm(unet.state_dict())
        (models / "diffusion_models").mkdir(parents=True, exist_ok=True)
        save_file(ldm_state, str(models / "diffusion_models" / f"{name}.safetensors"))
        summary[name] = sum(value.numel() for value in ldm_state.values())
        if in_channels == 4:
            (models / "loras").mkdir(parents=True, exist_ok=True)
            save_file(lora(ldm_state, seed=21), str(models / "loras" / f"{LORA_NAME}.safetensors"))
    for folder, name, state in (("text_encoders", CLIP_NAME, clip_l(31)), ("vae", VAE_NAME, taesd(32)),
                                ("controlnet", CONTROLNET_NAME, controlnet(33))):
        (models / folder).mkdir(parents=True, exist_ok=True)
        save_file(state, str(models / folder / f"{name}.safetensors"))
        summary[name] = sum(value.numel() for value in state.values())
    return summary


def import_comfyui(comfyui_dir: str) -> None:
    """Make ComfyUI's modules importable here, on the CPU (as the test server runs)."""
    sys.path.insert(0, comfyui_dir)
    from comfy.cli_args import args

    args.cpu = True


if __name__ == "__main__":
    comfyui_dir, base_dir = sys.argv[1:3]
    import_comfyui(comfyui_dir)
    print(json.dumps(build(Path(base_dir))))
