"""The cross-frame patch on a core MODEL, measured inside ComfyUI's own sampling code against diffusers.

Run by ComfyUI's interpreter after `core_model_files.py` (`COMFYUI_PYTHON core_model_check.py COMFYUI_DIR BASE`).
It loads the test UNet with ComfyUI's loader and the same weights into a diffusers `UNet2DConditionModel`, makes
one guided model call through ComfyUI's CFG guider (cond and uncond batched by ComfyUI, frames as the batch) on
the plain, the patched and LoRA'd models, and prints a JSON of maximum differences in the eps prediction:

- `patched_vs_diffusers_cross_frame`, `plain_vs_diffusers_plain`: per branch, against diffusers'
  `CrossFrameAttnProcessor(batch_size=2)` / default processor;
- `patched_vs_plain`: how much the patch changes (so the comparisons above can fail);
- `lora_then_patch_vs_patch_then_lora`, `lora_effect`: LoRA order and that the LoRA acts;
- `plain_before_vs_after_patched_run`: the input model after a patched clone ran (a leak would show here);
- `controlnet_*`: a core ControlNet on both conditionings: one of its self-attentions with the pack's hook against
  diffusers' `CrossFrameAttnProcessor(batch_size=2)` on the same weights; frame 0 unchanged by the patch; how much
  the hook changes the guided call (against the UNet patch alone); hooks left on the ControlNet afterwards;
- `sdxl_patched_vs_diffusers_cross_frame`, `sdxl_patched_vs_plain`: the same comparison on an SDXL-shaped UNet
  (two transformer blocks per layer, linear projections, pooled text and size embeddings), built in ComfyUI as its
  SDXL model class (a checkpoint of that size could not be recognised as SDXL, whose detection wants the full depth).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

FRAMES = 4
LATENT_SIZE = 8
SDXL_LDM = {"model_channels": 320, "channel_mult": [1, 1], "num_res_blocks": [1, 1], "transformer_depth": [2, 2],
            "transformer_depth_output": [2, 2, 2, 2], "transformer_depth_middle": 2}
SDXL_SIZE = {"width": 64, "height": 64, "crop_w": 0, "crop_h": 0, "target_width": 64, "target_height": 64}
SIGMA_INDEX = 500
"""The discrete noise level of the one model call (ComfyUI's `model_sampling.sigmas[500]`)."""
PACK_ROOT = Path(__file__).resolve().parents[2]


def import_pack():
    """The pack as ComfyUI imports it: by its folder, whatever the folder is called."""
    spec = importlib.util.spec_from_file_location("comfyui_text2video", PACK_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(PACK_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def guided_eps(model, noise, positive, negative, sigma) -> dict:
    """One CFG model call through ComfyUI's guider; each branch's eps prediction, `[FRAMES, 4, h, w]`."""
    import torch

    import comfy.samplers

    seen = {}

    def record(args):
        seen.update(args)
        return args["denoised"]

    def one_call(k_model, x, sigmas, extra_args=None, callback=None, disable=None):
        return k_model(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))

    recording = model.clone()
    recording.set_model_sampler_post_cfg_function(record)
    guider = comfy.samplers.CFGGuider(recording)
    guider.set_conds(positive, negative)
    guider.set_cfg(2.0)
    sigmas = torch.tensor([sigma, 0.0])
    with torch.no_grad():  # as ComfyUI's executor runs nodes
        guider.sample(noise, torch.zeros_like(noise), comfy.samplers.KSAMPLER(one_call), sigmas, disable_pbar=True,
                      seed=0)
    x = seen["input"]
    return {"input": x, "cond": (x - seen["cond_denoised"]) / sigma, "uncond": (x - seen["uncond_denoised"]) / sigma}


def diffusers_eps(unet, processor, x, sigma, timestep, positive, negative, added: dict | None = None) -> dict:
    """The same call in diffusers: batch `[uncond frames, cond frames]` as the reference pipeline builds it.

    `added`: SDXL's `added_cond_kwargs` for one frame (the same for both branches here)."""
    import torch

    unet.set_attn_processor(processor)
    scaled = x / (sigma**2 + 1) ** 0.5
    context = torch.cat([negative.expand(FRAMES, -1, -1), positive.expand(FRAMES, -1, -1)])
    added = {key: value.expand(2 * FRAMES, -1) for key, value in added.items()} if added else None
    with torch.no_grad():
        eps = unet(torch.cat([scaled, scaled]), timestep, encoder_hidden_states=context,
                   added_cond_kwargs=added).sample
    uncond, cond = eps.chunk(2)
    return {"cond": cond, "uncond": uncond}


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[key] - b[key]).abs().max()) for key in ("cond", "uncond"))


def sdxl_models(seed: int = 41):
    """An SDXL-shaped UNet in diffusers and the same weights as ComfyUI's SDXL model in a ModelPatcher."""
    import torch
    from diffusers import UNet2DConditionModel

    import comfy.model_detection
    import comfy.model_patcher
    import comfy.supported_models
    from core_model_files import to_ldm

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(320, 320),
        down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
        cross_attention_dim=2048, attention_head_dim=5, transformer_layers_per_block=2, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
        norm_num_groups=32).eval()
    ldm_state = to_ldm(unet.state_dict(), SDXL_LDM)
    config = comfy.supported_models.SDXL(comfy.model_detection.detect_unet_config(ldm_state, ""))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model(ldm_state, "")
    model.load_model_weights(ldm_state, "")
    cpu = torch.device("cpu")
    return unet, comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def check_sdxl(cross_frame, noise) -> dict:
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
        CrossFrameAttnProcessor2_0,
    )

    unet, plain = sdxl_models()
    generator = torch.Generator().manual_seed(1)
    positive_embeds, negative_embeds = (torch.randn(1, 77, 2048, generator=generator) for _ in range(2))
    pooled = torch.randn(1, 1280, generator=generator)
    positive = [[positive_embeds, {"pooled_output": pooled, **SDXL_SIZE}]]
    negative = [[negative_embeds, {"pooled_output": pooled, **SDXL_SIZE}]]
    model_sampling = plain.get_model_object("model_sampling")
    sigma = float(model_sampling.sigmas[SIGMA_INDEX])
    timestep = float(model_sampling.timestep(torch.tensor(sigma)))
    patched = guided_eps(cross_frame.patch(plain)[0], noise, positive, negative, sigma)
    plain_eps = guided_eps(plain, noise, positive, negative, sigma)
    size = SDXL_SIZE
    added = {"text_embeds": pooled, "time_ids": torch.tensor([[size["height"], size["width"], size["crop_h"],
                                                               size["crop_w"], size["target_height"],
                                                               size["target_width"]]], dtype=torch.float32)}
    arguments = (patched["input"], sigma, timestep, positive_embeds, negative_embeds, added)
    return {
        "sdxl_patched_vs_diffusers_cross_frame": max_diff(
            patched, diffusers_eps(unet, CrossFrameAttnProcessor2_0(batch_size=2), *arguments)),
        "sdxl_plain_vs_diffusers_plain": max_diff(plain_eps, diffusers_eps(unet, AttnProcessor2_0(), *arguments)),
        "sdxl_patched_vs_plain": max_diff(patched, plain_eps),
    }


def check_controlnet(cross_frame, plain, noise, positive_embeds, negative_embeds, sigma, models: Path) -> dict:
    """A core ControlNet on the conditionings (as ControlNetApplyAdvanced attaches it): its self-attention
    against diffusers' cross-frame processor on the same weights, and its effect inside a guided call."""
    import torch
    from diffusers.models.attention_processor import Attention
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
        CrossFrameAttnProcessor2_0,
    )

    import comfy.controlnet

    pack = sys.modules["comfyui_text2video"]
    loaded = comfy.controlnet.load_controlnet(str(models / "controlnet" / "t2v-it-controlnet.safetensors"))
    hint = torch.rand(FRAMES, 3, 8 * LATENT_SIZE, 8 * LATENT_SIZE, generator=torch.Generator().manual_seed(1))
    control = loaded.copy().set_cond_hint(hint, 1.0, (0.0, 1.0))
    with_control = lambda embeds: [[embeds, {"control": control, "control_apply_to_uncond": False}]]  # noqa: E731
    call = lambda model: guided_eps(model, noise, with_control(positive_embeds), with_control(negative_embeds),  # noqa: E731
                                    sigma)
    plain_run = call(plain)
    patched_run = call(cross_frame.patch(plain)[0])
    unet_only = call(pack.bridge.core_model_with_attn1_patch(plain, pack.attention.CrossFrameAttn1Patch()))

    [first_block] = [m for m in loaded.control_model.modules() if type(m).__name__ == "BasicTransformerBlock"][:1]
    comfy_attention = first_block.attn1
    reference = Attention(query_dim=comfy_attention.to_q.in_features, heads=comfy_attention.heads,
                          dim_head=comfy_attention.to_q.out_features // comfy_attention.heads, bias=False).eval()
    for name in ("to_q", "to_k", "to_v"):
        getattr(reference, name).load_state_dict(getattr(comfy_attention, name).state_dict())
    reference.to_out[0].load_state_dict(comfy_attention.to_out[0].state_dict())
    reference.set_processor(CrossFrameAttnProcessor2_0(batch_size=2))
    hidden = torch.randn(2 * FRAMES, 64, comfy_attention.to_q.in_features, generator=torch.Generator().manual_seed(2))
    handle = comfy_attention.register_forward_pre_hook(pack.attention.cross_frame.anchored_self_attention_hook(FRAMES),
                                                       with_kwargs=True)
    with torch.no_grad():
        hooked = comfy_attention(hidden, context=None, value=None, transformer_options={})
        handle.remove()
        expected = reference(hidden)
    return {
        "controlnet_attention_vs_diffusers_cross_frame": float((hooked - expected).abs().max()),
        "controlnet_frame_0_patched_vs_plain": max(float((patched_run[k][0] - plain_run[k][0]).abs().max())
                                                   for k in ("cond", "uncond")),
        "controlnet_hook_effect": max_diff(patched_run, unet_only),
        "controlnet_hooks_left": sum(len(m._forward_pre_hooks) for m in loaded.control_model.modules()),
    }


def check(base: Path) -> dict:
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
        CrossFrameAttnProcessor2_0,
    )

    import comfy.sd
    import comfy.utils

    pack = import_pack()
    cross_frame = pack.NODE_CLASS_MAPPINGS["T2VCrossFrameAttentionModel"]()
    models = base / "models"
    plain = comfy.sd.load_diffusion_model(str(models / "diffusion_models" / "t2v-it-sd15.safetensors"))
    lora = comfy.utils.load_torch_file(str(models / "loras" / "t2v-it-lora.safetensors"), safe_load=True)
    with_lora = lambda model: comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0.0)[0]  # noqa: E731

    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(FRAMES, 4, LATENT_SIZE, LATENT_SIZE, generator=generator)
    positive_embeds = torch.randn(1, 77, 768, generator=generator)
    negative_embeds = torch.randn(1, 77, 768, generator=generator)
    positive, negative = [[positive_embeds, {}]], [[negative_embeds, {}]]
    model_sampling = plain.get_model_object("model_sampling")
    sigma = float(model_sampling.sigmas[SIGMA_INDEX])
    timestep = float(model_sampling.timestep(torch.tensor(sigma)))

    call = lambda model: guided_eps(model, noise, positive, negative, sigma)  # noqa: E731
    plain_before = call(plain)
    patched = call(cross_frame.patch(plain)[0])
    plain_after = call(plain)
    lora_then_patch = call(cross_frame.patch(with_lora(plain))[0])
    patch_then_lora = call(with_lora(cross_frame.patch(plain)[0]))

    unet = UNet2DConditionModel.from_pretrained(base / "diffusers" / "t2v-it-sd15" / "unet").eval()
    x = patched["input"]
    reference = diffusers_eps(unet, CrossFrameAttnProcessor2_0(batch_size=2), x, sigma, timestep, positive_embeds,
                              negative_embeds)
    reference_plain = diffusers_eps(unet, AttnProcessor2_0(), x, sigma, timestep, positive_embeds, negative_embeds)
    return {
        "timestep": timestep,
        "patched_vs_diffusers_cross_frame": max_diff(patched, reference),
        "plain_vs_diffusers_plain": max_diff(plain_before, reference_plain),
        "patched_vs_plain": max_diff(patched, plain_before),
        "frame_0_patched_vs_plain": max(float((patched[k][0] - plain_before[k][0]).abs().max())
                                        for k in ("cond", "uncond")),
        "lora_then_patch_vs_patch_then_lora": max_diff(lora_then_patch, patch_then_lora),
        "lora_effect": max_diff(lora_then_patch, patched),
        "plain_before_vs_after_patched_run": max_diff(plain_before, plain_after),
        "eps_scale": float(patched["cond"].abs().max()),
        **check_sdxl(cross_frame, noise),
        **check_controlnet(cross_frame, plain, noise, positive_embeds, negative_embeds, sigma, models),
    }


if __name__ == "__main__":
    comfyui_dir, base_dir = sys.argv[1:3]
    sys.path.insert(0, str(Path(__file__).parent))
    from core_model_files import import_comfyui

    import_comfyui(comfyui_dir)
    print(json.dumps(check(Path(base_dir))))
