"""Text2Video-Zero on core ComfyUI models, outside ComfyUI: the attn1 patch's math against diffusers' reference
processor, and the three nodes on a stand-in for ComfyUI's ModelPatcher.

The real ComfyUI path (a saved checkpoint, LoRAs, core samplers, the UNet output against diffusers) is checked
in tests/integration/test_server_core_model.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
    CrossFrameAttnProcessor2_0,
)

from comfyui_text2video import bridge
from comfyui_text2video.attention import CrossFrameAttn1Patch
from comfyui_text2video.errors import NodeInputError
from comfyui_text2video.nodes.core_model import (T2VCrossFrameAttentionModel, T2VZeroMotionLatent, T2VZeroSchedule,
                                                 ZeroSchedule)

CHANNELS, TOKENS, HEADS = 64, 24, 8
LATENT_SCALE = 0.18215


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def comfy_self_attention(attn: Attention, n: torch.Tensor, patch, extra_options: dict) -> torch.Tensor:
    """ComfyUI's BasicTransformerBlock self-attention with an attn1_patch: the patch gets (n, n, n) and the
    block projects queries from n, keys and values from what the patch returns."""
    n, context, value = patch(n, n, n, extra_options)
    split = lambda t: t.unflatten(-1, (HEADS, -1)).transpose(1, 2)  # noqa: E731
    attended = F.scaled_dot_product_attention(split(attn.to_q(n)), split(attn.to_k(context)), split(attn.to_v(value)))
    return attn.to_out[1](attn.to_out[0](attended.transpose(1, 2).flatten(2)))


@pytest.mark.parametrize("branches", [1, 2, 3])
@pytest.mark.parametrize("frames", [1, 4])
def test_attn1_patch_equals_diffusers_cross_frame_processor(branches, frames):
    attn = Attention(query_dim=CHANNELS, heads=HEADS, dim_head=CHANNELS // HEADS, bias=False).eval()
    hidden = torch.randn(branches * frames, TOKENS, CHANNELS)
    with torch.no_grad():
        ours = comfy_self_attention(attn, hidden, CrossFrameAttn1Patch(), {"cond_or_uncond": list(range(branches))})
        attn.set_processor(CrossFrameAttnProcessor2_0(batch_size=branches))
        reference = attn(hidden)
        attn.set_processor(AttnProcessor2_0())
        plain = attn(hidden)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    if frames > 1:  # the patch changes something, so the comparison above can fail
        assert (ours - plain).abs().max() > 1e-2


def test_attn1_patch_refuses_a_batch_that_does_not_split_into_the_branches():
    hidden = torch.randn(5, TOKENS, CHANNELS)
    with pytest.raises(ValueError, match="batch of 5 does not split into 2 guidance branches"):
        CrossFrameAttn1Patch()(hidden, hidden, hidden, {"cond_or_uncond": [0, 1]})


# --------------------------------------------------------------------------- a stand-in for ComfyUI's ModelPatcher


class UNetModel(torch.nn.Module):
    """Named like ComfyUI's SD UNet class."""


class EPS:
    """Named like ComfyUI's eps-prediction sampling."""


class ModelSamplingDiscrete(EPS):
    pass


class CONST:
    """Named like ComfyUI's flow sampling."""


class LatentFormat:
    def process_in(self, latent):
        return latent * LATENT_SCALE

    def process_out(self, latent):
        return latent / LATENT_SCALE


class FakeModelPatcher:
    """What the nodes use of ComfyUI's ModelPatcher: `clone` (model options deep-copied), attn1 patches, objects."""

    def __init__(self, objects: dict):
        self.objects = objects
        self.model_options = {"transformer_options": {}}

    def clone(self):
        clone = FakeModelPatcher(self.objects)
        clone.model_options = copy.deepcopy(self.model_options)
        return clone

    def set_model_attn1_patch(self, patch):
        patches = self.model_options["transformer_options"].setdefault("patches", {})
        patches["attn1_patch"] = patches.get("attn1_patch", []) + [patch]

    def get_model_object(self, name):
        return self.objects[name]

    def add_wrapper_with_key(self, wrapper_type, key, wrapper):
        wrappers = self.model_options["transformer_options"].setdefault("wrappers", {})
        wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)

    def calc_cond_batch_wrappers(self):
        wrappers = self.model_options["transformer_options"].get("wrappers", {})
        return [w for key_wrappers in wrappers.get(bridge.CALC_COND_BATCH_WRAPPER, {}).values() for w in key_wrappers]

    def attn1_patches(self):
        return self.model_options["transformer_options"].get("patches", {}).get("attn1_patch", [])


def core_model(unet=None, sampling=None) -> FakeModelPatcher:
    return FakeModelPatcher({"diffusion_model": unet or UNetModel(), "model_sampling": sampling or ModelSamplingDiscrete(),
                             "latent_format": LatentFormat()})


def test_the_patched_model_is_a_clone_and_the_input_model_stays_unpatched():
    model = core_model()
    (patched,) = T2VCrossFrameAttentionModel().patch(model)
    assert patched is not model
    assert [type(p) for p in patched.attn1_patches()] == [CrossFrameAttn1Patch]
    assert model.attn1_patches() == []
    (twice,) = T2VCrossFrameAttentionModel().patch(model)  # a second branch from the same model: its own clone
    assert len(twice.attn1_patches()) == 1 and len(patched.attn1_patches()) == 1
    assert len(patched.calc_cond_batch_wrappers()) == 1 and model.calc_cond_batch_wrappers() == []


class ComfyCrossAttention(torch.nn.Module):
    """ComfyUI's CrossAttention call convention, `attn(x, context=None, value=None)`, on a diffusers Attention's
    weights."""

    def __init__(self, attn: Attention):
        super().__init__()
        self.attn = attn

    def forward(self, x, context=None, value=None, transformer_options=None):
        context = x if context is None else context
        value = context if value is None else value
        split = lambda t: t.unflatten(-1, (HEADS, -1)).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.attn.to_q(x)), split(self.attn.to_k(context)), split(self.attn.to_v(value))
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return self.attn.to_out[1](self.attn.to_out[0](attended))


class BasicTransformerBlock(torch.nn.Module):
    """Named like ComfyUI's transformer block; calls its self-attention as ComfyUI's does."""

    def __init__(self, attn: Attention):
        super().__init__()
        self.attn1 = ComfyCrossAttention(attn)

    def forward(self, x):
        return self.attn1(x, context=None, value=None, transformer_options={})


class FakeControlNet:
    """What the wrapper reads of a core ControlNet: `control_model` and the chain of `previous_controlnet`."""

    def __init__(self, control_model, previous_controlnet=None):
        self.control_model, self.previous_controlnet = control_model, previous_controlnet


@pytest.mark.parametrize("branches", [1, 2])
def test_core_controlnets_get_cross_frame_self_attention_during_the_models_calls_only(branches):
    frames = 4
    attn = Attention(query_dim=CHANNELS, heads=HEADS, dim_head=CHANNELS // HEADS, bias=False).eval()
    block, chained_block = BasicTransformerBlock(attn), BasicTransformerBlock(attn)
    controlnet = FakeControlNet(torch.nn.Sequential(block), FakeControlNet(torch.nn.Sequential(chained_block)))
    conds = [[{"control": controlnet}], [{"control": controlnet}], None]
    hidden = torch.randn(branches * frames, TOKENS, CHANNELS)
    (patched,) = T2VCrossFrameAttentionModel().patch(core_model())
    [wrapper] = patched.calc_cond_batch_wrappers()
    with torch.no_grad():
        plain = block(hidden)
        inside = wrapper(lambda *_args: (block(hidden), chained_block(hidden)), "model", conds,
                         torch.zeros(frames, 4, 8, 8), "timestep", {})
        after = block(hidden)
        attn.set_processor(CrossFrameAttnProcessor2_0(batch_size=branches))
        reference = attn(hidden)
    torch.testing.assert_close(inside[0], reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(inside[1], reference, rtol=0, atol=1e-5)  # a chained ControlNet too
    assert (plain - reference).abs().max() > 1e-2  # the hook acts, so the comparison above can fail
    assert torch.equal(after, plain)  # removed after the call


def test_the_controlnet_hook_is_removed_when_the_models_call_fails():
    attn = Attention(query_dim=CHANNELS, heads=HEADS, dim_head=CHANNELS // HEADS, bias=False).eval()
    block = BasicTransformerBlock(attn)
    (patched,) = T2VCrossFrameAttentionModel().patch(core_model())
    [wrapper] = patched.calc_cond_batch_wrappers()

    def interrupted(*_args):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wrapper(interrupted, "model", [[{"control": FakeControlNet(block)}]], torch.zeros(4, 4, 8, 8), "t", {})
    assert not block.attn1._forward_pre_hooks


@pytest.mark.parametrize("model, message", [
    (object(), "expected a core MODEL.*T2VCrossFrameAttention"),
    (core_model(unet=torch.nn.Linear(1, 1)), "its diffusion model is a Linear; Text2Video-Zero needs a Stable Diffusion"),
    (core_model(sampling=CONST()), "its sampling is not eps or v-prediction"),
])
def test_models_the_patch_cannot_serve_are_refused(model, message):
    with pytest.raises(NodeInputError, match=f"T2VCrossFrameAttentionModel: input 'model': {message}"):
        T2VCrossFrameAttentionModel().patch(model)


@pytest.fixture
def sigmas(monkeypatch):
    """Core sigmas stand-in: 14.6 down to 0 over `steps`, recording what it was asked."""
    asked = []

    def core_sigmas(model, steps, sampler_name, scheduler):
        asked.append((steps, sampler_name, scheduler))
        return torch.linspace(14.6, 0.0, steps + 1)

    monkeypatch.setattr(bridge, "core_sigmas", core_sigmas)
    return asked


def test_the_schedule_gives_the_samplers_steps_and_the_noise_levels_there(sigmas):
    schedule, steps, t1_step, t0_step = T2VZeroSchedule().plan(core_model(), 10, "euler", "karras", t0=5, t1=7)
    assert (steps, t1_step, t0_step) == (10, 2, 4)  # t1/t0 count steps from the end, as the reference does
    assert sigmas == [(10, "euler", "karras")]
    expected = torch.linspace(14.6, 0.0, 11)
    assert (schedule.sigma_t1, schedule.sigma_t0) == pytest.approx((float(expected[2]), float(expected[4])))


@pytest.mark.parametrize("t0, t1, message", [(5, 10, "t1 = 10 needs more than 10 steps"), (7, 5, "0 <= t0 < t1")])
def test_a_schedule_that_does_not_fit_the_steps_is_refused(sigmas, t0, t1, message):
    with pytest.raises(NodeInputError, match=message):
        T2VZeroSchedule().plan(core_model(), 10, "euler", "normal", t0=t0, t1=t1)


def schedule(sigma_t1: float, sigma_t0: float) -> ZeroSchedule:
    latent_format = LatentFormat()
    return ZeroSchedule(10, 2, 4, sigma_t1, sigma_t0, latent_format.process_in, latent_format.process_out)


def frame(height: int = 8, width: int = 8) -> dict:
    return {"samples": torch.randn(1, 4, height, width)}


def test_frame_0_is_the_t1_latent_and_the_others_are_t0_renoised_to_t1():
    at_t1, at_t0 = frame(), frame()
    sigma_t1, sigma_t0 = 6.0, 2.0
    (video,) = T2VZeroMotionLatent().move(schedule(sigma_t1, sigma_t0), at_t1, at_t0, seed=3, frames=400,
                                          motion_x=0.0, motion_y=0.0)
    samples = video["samples"]
    assert samples.shape == (400, 4, 8, 8)
    assert torch.equal(samples[0], at_t1["samples"][0])
    added = (samples[1:] - at_t0["samples"]) * LATENT_SCALE  # the added noise, in the model's space
    assert added.mean().abs() < 0.01 * added.std()
    assert added.std() == pytest.approx((sigma_t1**2 - sigma_t0**2) ** 0.5, rel=0.02)


def test_frame_i_is_moved_by_i_times_the_motion():
    at_t0 = frame(height=8, width=16)
    # 64 pixels on the reference's 512 grid are 2 latent pixels of a 16-wide latent; equal sigmas add no noise
    (video,) = T2VZeroMotionLatent().move(schedule(2.0, 2.0), frame(8, 16), at_t0, seed=0, frames=3, motion_x=64.0,
                                          motion_y=0.0)
    source = at_t0["samples"][0]
    for index in (1, 2):  # positive motion moves the content left
        moved = video["samples"][index]
        torch.testing.assert_close(moved[:, :, :16 - 2 * index], source[:, :, 2 * index:], rtol=0, atol=1e-6)


def test_the_seed_decides_the_renoising_noise():
    at_t1, at_t0 = frame(), frame()
    move = lambda seed: T2VZeroMotionLatent().move(schedule(6.0, 2.0), at_t1, at_t0, seed, 3, 12.0, 12.0)[0]  # noqa: E731
    assert torch.equal(move(1)["samples"], move(1)["samples"])
    assert not torch.allclose(move(1)["samples"], move(2)["samples"])


@pytest.mark.parametrize("inputs, message", [
    ({"schedule": "50 steps"}, "input 'schedule': connect the schedule output of T2VZeroSchedule"),
    ({"latent_t1": {"samples": torch.zeros(2, 4, 8, 8)}}, "input 'latent_t1': expected frame 0 alone.*batch of 2"),
    ({"latent_t0": {"samples": torch.zeros(1, 4, 8, 16)}}, "input 'latent_t0': its shape .* differs"),
    ({"latent_t0": {"samples": torch.zeros(1, 4, 1, 8, 8)}}, "input 'latent_t0': expected a core image LATENT"),
])
def test_motion_inputs_that_cannot_be_frame_0_are_refused(inputs, message):
    arguments = {"schedule": schedule(6.0, 2.0), "latent_t1": frame(), "latent_t0": frame(), "seed": 0, "frames": 4,
                 "motion_x": 12.0, "motion_y": 12.0, **inputs}
    with pytest.raises(NodeInputError, match=f"T2VZeroMotionLatent: {message}"):
        T2VZeroMotionLatent().move(**arguments)


def test_outside_comfyui_the_schedule_says_it_needs_comfyui():
    with pytest.raises(RuntimeError, match="only inside ComfyUI"):
        T2VZeroSchedule().plan(core_model(), 10, "euler", "normal", t0=5, t1=7)
