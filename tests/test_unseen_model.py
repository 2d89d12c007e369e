"""A user's own 3D-UNet checkpoint, driven only through the contract (node ids, input names, the runner)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from reference_pipelines import generator, text2video_pipeline

from comfyui_text2video import bridge
from comfyui_text2video.media import video_io
from comfyui_text2video.models.builtin import ensure_builtin
from comfyui_text2video.headless.runner import run_workflow

WORKFLOW = "example_workflows/api/text2video.json"


@pytest.fixture(scope="module")
def unseen_model(data_dir):
    """A 3D UNet of another shape (3 blocks, 48-wide text), another text encoder and beta schedule."""
    from diffusers import UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    source = ensure_builtin("tiny-text2video", bridge.builtin_cache_dir())
    folder = data_dir / "models" / "text2video" / "my-studio" / "unseen-t2v"
    shutil.copytree(source, folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        unet = UNet3DConditionModel(
            sample_size=16, block_out_channels=(24, 48, 48), layers_per_block=1, norm_num_groups=8,
            down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
            cross_attention_dim=48, attention_head_dim=4)
        vocab_size = len(json.loads((source / "tokenizer" / "vocab.json").read_text()))
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=6,
            max_position_embeddings=77, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1))
    for name, module in (("unet", unet), ("text_encoder", text_encoder)):
        shutil.rmtree(folder / name)
        module.save_pretrained(folder / name, safe_serialization=True)
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    scheduler.update(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, steps_offset=0)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return "my-studio/unseen-t2v"


def test_unseen_model_through_the_runner_matches_the_reference(unseen_model, data_dir):
    from comfyui_text2video.models.loading import load_model

    workflow = json.loads(open(WORKFLOW).read())
    summary = run_workflow(workflow, [f"1.model_name={json.dumps(unseen_model)}", "1.dtype=\"float32\"",
                                      "4.width=72", "4.height=40", "4.frames=6", "5.steps=5", "5.seed=99",
                                      "5.sampler_name=\"unipc\"", "7.format=\"png\"",
                                      "7.filename_prefix=\"unseen/run\""])
    files = summary["outputs"][0]["files"]  # the png frames of one sequence folder
    assert len(files) == 6
    frames = video_io.read_frames(Path(files[0]).parent).frames.float() / 255

    pipe = text2video_pipeline(*load_model(unseen_model, "float32"), "unipc")
    reference = pipe(workflow["2"]["inputs"]["text"], negative_prompt=workflow["3"]["inputs"]["text"], num_frames=6,
                     height=40, width=72, num_inference_steps=5, guidance_scale=workflow["5"]["inputs"]["cfg"],
                     generator=generator(99), output_type="pt").frames
    reference = reference[0].permute(0, 2, 3, 1)
    assert frames.shape == reference.shape == (6, 40, 72, 3)
    # png frames are 8-bit: equal to the rounded reference, up to one level where it sits on a rounding edge
    levels = (frames * 255 - (reference * 255).round()).abs()
    assert levels.max() <= 1
    assert (levels == 0).float().mean() > 0.99
