"""Cross-frame attention (Text2Video-Zero) against diffusers' reference processor, and its patch lifecycle."""

import pytest
import torch
from diffusers import UNet2DConditionModel, UNet3DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
    CrossFrameAttnProcessor2_0,
)

from comfyui_text2video.attention import CrossFrameAttention, CrossFrameAttentionProcessor

TOLERANCE = dict(rtol=0.0, atol=1e-5)
CHANNELS = 64
TEXT_WIDTH = 32
TEXT_TOKENS = 7
TOKENS = 24


def sd_self_attention() -> Attention:
    """Configured like `attn1` of a Stable Diffusion transformer block."""
    return Attention(query_dim=CHANNELS, heads=8, dim_head=8, bias=False).eval()


def sd_cross_attention() -> Attention:
    """Configured like `attn2` of a Stable Diffusion transformer block."""
    return Attention(query_dim=CHANNELS, cross_attention_dim=TEXT_WIDTH, heads=8, dim_head=8, bias=False).eval()


def run(attn: Attention, processor, *args, **kwargs) -> torch.Tensor:
    attn.set_processor(processor)
    with torch.no_grad():
        return attn(*args, **kwargs)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.mark.parametrize("groups", [1, 2, 3])
@pytest.mark.parametrize("frames_per_group", [1, 2, 5, 8])
def test_self_attention_equals_reference(groups, frames_per_group):
    attn = sd_self_attention()
    frames = torch.randn(groups * frames_per_group, TOKENS, CHANNELS)

    ours = run(attn, CrossFrameAttentionProcessor(frames_per_group), frames)
    reference = run(attn, CrossFrameAttnProcessor2_0(batch_size=groups), frames)

    torch.testing.assert_close(ours, reference, **TOLERANCE)
    if frames_per_group > 1:  # the comparison must not be one that plain attention passes too
        plain = run(attn, AttnProcessor2_0(), frames)
        assert (ours - plain).abs().max() > 1e-2


def test_each_frame_sees_only_its_group_anchor():
    attn = sd_self_attention()
    frames = torch.randn(2 * 3, TOKENS, CHANNELS)
    changed = frames.clone()
    changed[[1, 2, 4, 5]] = torch.randn(4, TOKENS, CHANNELS)  # everything but the two anchors

    before = run(attn, CrossFrameAttentionProcessor(3), frames)
    after = run(attn, CrossFrameAttentionProcessor(3), changed)

    torch.testing.assert_close(after[[0, 3]], before[[0, 3]], **TOLERANCE)


def test_self_attention_with_mask_equals_reference():
    attn = sd_self_attention()
    frames = torch.randn(2 * 4, TOKENS, CHANNELS)
    mask = torch.zeros(2 * 4, 1, TOKENS)
    mask[:, :, -5:] = -10000.0  # hide the last tokens of the anchor

    ours = run(attn, CrossFrameAttentionProcessor(4), frames, attention_mask=mask)
    reference = run(attn, CrossFrameAttnProcessor2_0(batch_size=2), frames, attention_mask=mask)

    torch.testing.assert_close(ours, reference, **TOLERANCE)


@pytest.mark.parametrize("frames_per_group", [1, 4])
def test_cross_attention_is_plain_attention(frames_per_group):
    attn = sd_cross_attention()
    frames = torch.randn(2 * frames_per_group, TOKENS, CHANNELS)
    text = torch.randn(2 * frames_per_group, TEXT_TOKENS, TEXT_WIDTH)

    ours = run(attn, CrossFrameAttentionProcessor(frames_per_group), frames, encoder_hidden_states=text)
    plain = run(attn, AttnProcessor2_0(), frames, encoder_hidden_states=text)

    torch.testing.assert_close(ours, plain, **TOLERANCE)


ATTENTION_VARIANTS = {
    "vae-like: group norm, 4-D input, residual, rescale": dict(
        make=lambda: Attention(
            query_dim=CHANNELS, heads=4, dim_head=16, norm_num_groups=8, residual_connection=True,
            rescale_output_factor=2.0, bias=True,
        ),
        inputs=lambda: dict(hidden_states=torch.randn(3, CHANNELS, 4, 6)),
    ),
    "spatial norm": dict(
        make=lambda: Attention(query_dim=CHANNELS, heads=4, dim_head=16, spatial_norm_dim=5),
        inputs=lambda: dict(hidden_states=torch.randn(3, CHANNELS, 4, 6), temb=torch.randn(3, 5, 2, 3)),
    ),
    "query and key norms": dict(
        make=lambda: Attention(query_dim=CHANNELS, heads=4, dim_head=16, qk_norm="layer_norm"),
        inputs=lambda: dict(hidden_states=torch.randn(3, TOKENS, CHANNELS)),
    ),
    "masked self-attention": dict(
        make=lambda: Attention(query_dim=CHANNELS, heads=4, dim_head=16),
        inputs=lambda: dict(
            hidden_states=torch.randn(3, TOKENS, CHANNELS),
            attention_mask=torch.where(torch.rand(3, 1, TOKENS) < 0.3, -10000.0, 0.0),
        ),
    ),
    "a mask per query": dict(
        make=lambda: Attention(query_dim=CHANNELS, heads=4, dim_head=16),
        inputs=lambda: dict(
            hidden_states=torch.randn(3, TOKENS, CHANNELS),
            attention_mask=torch.where(torch.rand(3, TOKENS, TOKENS) < 0.3, -10000.0, 0.0),
        ),
    ),
    "normalized, masked cross-attention": dict(
        make=lambda: Attention(
            query_dim=CHANNELS, cross_attention_dim=TEXT_WIDTH, heads=4, dim_head=16, cross_attention_norm="layer_norm"
        ),
        inputs=lambda: dict(
            hidden_states=torch.randn(3, TOKENS, CHANNELS),
            encoder_hidden_states=torch.randn(3, TEXT_TOKENS, TEXT_WIDTH),
            attention_mask=torch.where(torch.rand(3, 1, TEXT_TOKENS) < 0.3, -10000.0, 0.0),
        ),
    ),
}


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
def test_one_frame_per_group_keeps_every_branch_of_the_default_processor(variant):
    attn = ATTENTION_VARIANTS[variant]["make"]().eval()
    inputs = ATTENTION_VARIANTS[variant]["inputs"]()

    ours = run(attn, CrossFrameAttentionProcessor(1), **inputs)
    default = run(attn, AttnProcessor2_0(), **inputs)

    torch.testing.assert_close(ours, default, **TOLERANCE)


def test_batch_of_partial_groups_is_refused():
    with pytest.raises(ValueError, match="whole groups of 4 frames.*6 frames"):
        run(sd_self_attention(), CrossFrameAttentionProcessor(4), torch.randn(6, TOKENS, CHANNELS))


def test_frames_per_group_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        CrossFrameAttentionProcessor(0)


# --- the patch on a UNet ---

GROUPS = 2  # classifier-free guidance: [uncond frames..., cond frames...]
FRAMES = 4


@pytest.fixture
def unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


@pytest.fixture
def unet_inputs():
    torch.manual_seed(1)
    return (
        torch.randn(GROUPS * FRAMES, 4, 16, 16),
        torch.tensor(500),
        torch.randn(GROUPS * FRAMES, TEXT_TOKENS, TEXT_WIDTH),
    )


def denoise(unet, inputs) -> torch.Tensor:
    with torch.no_grad():
        return unet(*inputs).sample


def test_patched_unet_equals_reference(unet, unet_inputs):
    unpatched = denoise(unet, unet_inputs)
    with CrossFrameAttention().installed(unet, FRAMES):
        ours = denoise(unet, unet_inputs)
    unet.set_attn_processor(CrossFrameAttnProcessor2_0(batch_size=GROUPS))
    reference = denoise(unet, unet_inputs)

    torch.testing.assert_close(ours, reference, **TOLERANCE)
    assert (ours - unpatched).abs().max() > 1e-3


def test_one_frame_per_group_equals_unpatched_unet(unet, unet_inputs):
    unpatched = denoise(unet, unet_inputs)
    with CrossFrameAttention().installed(unet, 1):
        ours = denoise(unet, unet_inputs)

    torch.testing.assert_close(ours, unpatched, **TOLERANCE)


def test_installs_on_self_attention_only(unet):
    originals = unet.attn_processors
    with CrossFrameAttention().installed(unet, FRAMES):
        installed = unet.attn_processors

    self_attention = [name for name in originals if ".attn1." in name]
    assert len(self_attention) == 4  # down, mid, two up
    for name in self_attention:
        assert isinstance(installed[name], CrossFrameAttentionProcessor)
        assert installed[name].frames_per_group == FRAMES
    for name in originals.keys() - self_attention:
        assert installed[name] is originals[name]


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_originals_are_restored_after_an_interruption(unet, unet_inputs, interruption):
    originals = unet.attn_processors
    with pytest.raises(interruption):
        with CrossFrameAttention().installed(unet, FRAMES):
            denoise(unet, unet_inputs)
            raise interruption()

    restored = unet.attn_processors
    assert restored.keys() == originals.keys()
    assert all(restored[name] is originals[name] for name in originals)


def test_originals_are_restored_after_an_error_in_the_unet(unet, unet_inputs):
    originals = unet.attn_processors
    with pytest.raises(ValueError, match="whole groups"):
        with CrossFrameAttention().installed(unet, 3):
            denoise(unet, unet_inputs)  # 8 frames are not whole groups of 3

    assert all(unet.attn_processors[name] is originals[name] for name in originals)


def test_nested_installations_restore_in_turn(unet):
    patch = CrossFrameAttention()
    originals = unet.attn_processors
    with patch.installed(unet, 4):
        outer = unet.attn_processors
        with patch.installed(unet, 2):
            inner = unet.attn_processors
        assert all(unet.attn_processors[name] is outer[name] for name in outer)

    assert all(unet.attn_processors[name] is originals[name] for name in originals)
    assert {inner[name].frames_per_group for name in inner if ".attn1." in name} == {2}
    assert {outer[name].frames_per_group for name in outer if ".attn1." in name} == {4}


def test_one_patch_serves_two_unets_without_sharing_state(unet, unet_inputs):
    patch = CrossFrameAttention()
    other_unet = UNet2DConditionModel.from_config(unet.config).eval()
    other_unet.load_state_dict(unet.state_dict())
    one_frame_per_group = denoise(unet, unet_inputs)

    with patch.installed(other_unet, FRAMES), patch.installed(unet, 1):
        assert torch.equal(denoise(unet, unet_inputs), one_frame_per_group)
        cross_frame = denoise(other_unet, unet_inputs)
    with patch.installed(unet, FRAMES):
        torch.testing.assert_close(denoise(unet, unet_inputs), cross_frame, **TOLERANCE)


def test_temporal_attention_of_3d_unets_is_left_alone():
    unet3d = UNet3DConditionModel(
        block_out_channels=(8, 8),
        layers_per_block=1,
        sample_size=32,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=4,
        norm_num_groups=2,
    )
    originals = unet3d.attn_processors
    with CrossFrameAttention().installed(unet3d, FRAMES):
        installed = unet3d.attn_processors

    patched = {name for name in originals if installed[name] is not originals[name]}
    assert patched == {
        name for name in originals if ".attn1." in name and ".attentions." in name
    }, "only the spatial transformers' self-attention"


def test_a_model_without_self_attention_is_refused():
    no_attention = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type=None,
        norm_num_groups=8,
    )
    with pytest.raises(ValueError, match="no self-attention layers"):
        with CrossFrameAttention().installed(no_attention, FRAMES):
            pass
