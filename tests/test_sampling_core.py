"""The pure sampling core, driven by plain callables instead of a UNet."""

from __future__ import annotations

import pytest
import torch

from comfyui_text2video.models.builtin import _SCHEDULER
from comfyui_text2video.samplers.text2video import SamplingPlan, sample, seeded_generator

SCHEDULER_CONFIG = {"_class_name": "DDIMScheduler", **_SCHEDULER}


def oracle_for(clean: torch.Tensor, config: dict):
    """A perfect epsilon model for data that is always `clean`."""
    from diffusers import DDPMScheduler

    alphas_cumprod = DDPMScheduler.from_config(config).alphas_cumprod

    def predict_noise(x_scaled, t):
        alpha_bar = alphas_cumprod[int(round(float(t)))]
        return (x_scaled - alpha_bar.sqrt() * clean) / (1 - alpha_bar).sqrt()

    return predict_noise


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "euler", "unipc"])
def test_early_stop_without_leftover_noise_returns_the_clean_estimate(sampler):
    clean = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    plan = SamplingPlan(sampler, "normal", steps=10, end_step=3, return_with_leftover_noise=False)
    estimate, state = sample(oracle_for(clean, SCHEDULER_CONFIG), SCHEDULER_CONFIG, torch.zeros_like(clean), plan,
                             seeded_generator(1))
    assert state is None
    assert (estimate - clean).abs().max() < 1e-3
    noisy, state = sample(oracle_for(clean, SCHEDULER_CONFIG), SCHEDULER_CONFIG, torch.zeros_like(clean),
                          SamplingPlan(sampler, "normal", steps=10, end_step=3, return_with_leftover_noise=True),
                          seeded_generator(1))
    assert state is not None and state.next_step == 3
    assert (noisy - clean).abs().max() > 0.1


@pytest.mark.parametrize("sampler", ["ddim", "euler"])
def test_an_x0_predicting_model_stopped_early_returns_its_prediction(sampler):
    """Models trained to predict the clean sample (`prediction_type` "sample") give it as the clean estimate."""
    config = {**SCHEDULER_CONFIG, "prediction_type": "sample"}
    clean = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    plan = SamplingPlan(sampler, "normal", steps=10, end_step=3, return_with_leftover_noise=False)
    estimate, _state = sample(lambda x, t: clean, config, torch.zeros_like(clean), plan, seeded_generator(1))
    torch.testing.assert_close(estimate, clean, rtol=0, atol=1e-6)


def test_progress_callback_counts_every_model_call():
    calls = []
    plan = SamplingPlan("heun", "normal", steps=3)
    sample(lambda x, t: torch.zeros_like(x), SCHEDULER_CONFIG, torch.zeros(1, 4, 1, 2, 2), plan, seeded_generator(0),
           callback=lambda done, total, latents: calls.append((done, total, latents.shape)))
    assert calls == [(i, 5, (1, 4, 1, 2, 2)) for i in range(1, 6)]  # heun: 3 steps = 5 model calls
