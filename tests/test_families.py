"""Model families: which family a folder belongs to, and what the sampler's guidance does with each."""

from __future__ import annotations

import pytest
import torch

from comfyui_text2video.errors import ModelLoadError
from comfyui_text2video.models.families import family_of
from comfyui_text2video.samplers.guidance import Condition, Guidance, GuidedNoisePredictor

UNET_2D = {"_class_name": "UNet2DConditionModel", "in_channels": 4}


@pytest.mark.parametrize("index, unet, family", [
    ({}, {"_class_name": "UNet3DConditionModel", "in_channels": 4}, "text2video_3d"),
    ({}, UNET_2D, "stable_diffusion"),
    ({"text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]},
     {**UNET_2D, "addition_embed_type": "text_time"}, "sdxl"),
    ({}, {**UNET_2D, "in_channels": 8}, "instruct_pix2pix"),
])
def test_a_folder_is_recognised_by_its_family(index, unet, family):
    assert family_of("m", index, unet).name == family


def test_a_2d_unet_of_no_family_names_its_channels():
    with pytest.raises(ModelLoadError, match=r"m: its UNet is a UNet2DConditionModel with 9 input channels"):
        family_of("m", {}, {**UNET_2D, "in_channels": 9})


class EchoUNet(torch.nn.Module):
    """Returns, for each sample, its first channel plus its embedding's and extras' sums: what each copy saw."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, encoder_hidden_states, return_dict, added_cond_kwargs=None):
        self.calls.append((x.shape, added_cond_kwargs))
        seen = x[:, :1] + encoder_hidden_states.sum((1, 2)).view(-1, *[1] * (x.ndim - 1))
        if x.shape[1] > 4:  # concatenated latents: add them too
            seen = seen + x[:, 4:5]
        return (seen.expand(-1, 4, *x.shape[2:]),)


def entry(value: float, **kwargs) -> Condition:
    return Condition(torch.full((1, 2, 3), value / 6), **kwargs)


def test_classifier_free_guidance_batches_negative_then_positive_over_frames():
    unet = EchoUNet()
    predictor = GuidedNoisePredictor(unet, False, Guidance([entry(10.0)], [entry(2.0)], cfg=3.0), torch.float32)
    x = torch.zeros(1, 4, 5, 2, 2)
    out = predictor(x, torch.tensor(1))
    assert unet.calls[0][0] == (10, 4, 2, 2)  # 2 groups x 5 frames as the batch
    assert torch.allclose(out, torch.full_like(x, 2.0 + 3.0 * (10.0 - 2.0)))


def test_three_way_guidance_of_instruct_pix2pix():
    unet = EchoUNet()
    image = torch.full((1, 4, 2, 2, 2), 100.0)
    guidance = Guidance([entry(10.0, concat=image)], [entry(2.0, concat=image)], cfg=3.0, image_cfg=1.5)
    out = GuidedNoisePredictor(unet, False, guidance, torch.float32)(torch.zeros(1, 4, 2, 2, 2), torch.tensor(1))
    text, image_only, uncond = 110.0, 102.0, 2.0
    expected = uncond + 3.0 * (text - image_only) + 1.5 * (image_only - uncond)
    assert unet.calls[0][0] == (6, 8, 2, 2)
    assert torch.allclose(out, torch.full_like(out, expected))
    unguided = Guidance([entry(10.0, concat=image)], [], cfg=3.0, image_cfg=0.5)
    assert torch.allclose(GuidedNoisePredictor(EchoUNet(), False, unguided, torch.float32)(
        torch.zeros(1, 4, 2, 2, 2), torch.tensor(1)), torch.full_like(out, text))


def test_extra_unet_inputs_follow_each_copy_and_frame():
    unet = EchoUNet()
    added = {"time_ids": torch.tensor([[1.0, 2.0]])}
    guidance = Guidance([entry(1.0, added=added)], [entry(0.0, added={"time_ids": torch.tensor([[3.0, 4.0]])})],
                        cfg=2.0)
    GuidedNoisePredictor(unet, False, guidance, torch.float32)(torch.zeros(1, 4, 3, 2, 2), torch.tensor(1))
    time_ids = unet.calls[0][1]["time_ids"]
    assert time_ids.tolist() == [[3.0, 4.0]] * 3 + [[1.0, 2.0]] * 3
