"""The public contract (DESIGN.md section 4): node ids, input names in widget order, output types.

Saved UI workflows store widget values by position, so these lists may only ever grow at the end.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import comfyui_text2video
from comfyui_text2video import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

SAMPLER = ["seed", "steps", "cfg", "sampler_name", "scheduler"]
CONTRACT = {
    "T2VModelLoader": (["model_name", "dtype"], [], ("T2V_MODEL", "T2V_CLIP", "T2V_VAE")),
    "T2VTextEncode": (["clip", "text"], [], ("CONDITIONING",)),
    "T2VEmptyLatentVideo": (["width", "height", "frames", "batch_size"], [], ("LATENT",)),
    "T2VSampler": (["model", "positive", "negative", "latent", *SAMPLER, "denoise"],
                   ["eta", "start_step", "end_step", "add_noise", "return_with_leftover_noise", "frame_noise"],
                   ("LATENT",)),
    "T2VVAEEncode": (["vae", "images"], ["frames_per_batch"], ("LATENT",)),
    "T2VVAEDecode": (["vae", "latent"], ["frames_per_batch"], ("IMAGE",)),
    "T2VVideoToVideo": (["model", "positive", "negative", "vae", "images", *SAMPLER, "strength"],
                        ["width", "height", "frames_per_batch"], ("LATENT",)),
    "T2VCrossFrameAttention": (["model"], [], ("T2V_MODEL",)),
    "T2VMotionFieldLatent": (["latent_t1", "latent_t0", "frames", "motion_x", "motion_y"], [], ("LATENT",)),
    "T2VZeroSteps": (["steps", "t0", "t1"], [], ("INT", "INT")),
    "T2VText2VideoZero": (["model", "positive", "negative", *SAMPLER, "width", "height", "frames", "motion_x",
                           "motion_y", "t0", "t1", "chunk_size"], [], ("LATENT",)),
    "T2VLoadVideo": (["video", "frame_limit", "skip_first", "select_every_nth"], ["width", "height"],
                     ("IMAGE", "FLOAT", "INT")),
    "T2VSaveVideo": (["images", "fps", "filename_prefix", "format"], ["quality"], ()),
    "T2VCrossFrameAttentionModel": (["model"], [], ("MODEL",)),
    "T2VZeroSchedule": (["model", "steps", "sampler_name", "scheduler", "t0", "t1"], [],
                        ("T2V_ZERO_SCHEDULE", "INT", "INT", "INT")),
    "T2VZeroMotionLatent": (["schedule", "latent_t1", "latent_t0", "seed", "frames", "motion_x", "motion_y"], [],
                            ("LATENT",)),
    "T2VContextWindows": (["model", "context_length", "context_overlap", "context_schedule", "fuse_method"],
                          ["context_stride", "closed_loop"], ("T2V_MODEL",)),
    "T2VFeedForwardChunking": (["model", "chunk_size"], [], ("T2V_MODEL",)),
    "T2VVAETiling": (["vae", "tile_size", "tile_overlap"], [], ("T2V_VAE",)),
    "T2VControlNetLoader": (["controlnet_name"], [], ("T2V_CONTROLNET",)),
    "T2VApplyControlNet": (["positive", "negative", "controlnet", "images", "strength"],
                           ["start_percent", "end_percent"], ("CONDITIONING", "CONDITIONING")),
    "T2VInstructPix2PixConditioning": (["positive", "negative", "vae", "images", "image_cfg"], ["frames_per_batch"],
                                       ("CONDITIONING", "CONDITIONING", "LATENT")),
    "T2VMotionAdapterLoader": (["adapter_name"], [], ("T2V_MOTION_ADAPTER",)),
    "T2VApplyMotionAdapter": (["model", "motion_adapter"], [], ("T2V_MODEL",)),
    "T2VFreeInit": (["model", "iterations", "method", "order", "spatial_stop_frequency", "temporal_stop_frequency"],
                    ["fast_sampling"], ("T2V_MODEL",)),
    "T2VI2VGenXLConditioning": (["positive", "negative", "clip", "vae", "image", "width", "height", "frames",
                                 "target_fps", "seed"], [], ("CONDITIONING", "CONDITIONING", "LATENT")),
    "T2VSVDConditioning": (["clip", "vae", "image", "width", "height", "frames", "fps", "motion_bucket_id",
                            "noise_aug_strength", "seed", "min_cfg"], [], ("CONDITIONING", "CONDITIONING", "LATENT")),
}


def test_exactly_the_contract_nodes_are_exported():
    assert set(NODE_CLASS_MAPPINGS) == set(CONTRACT)
    assert set(NODE_DISPLAY_NAME_MAPPINGS) == set(CONTRACT)
    web = Path(comfyui_text2video.__file__).parent / comfyui_text2video.WEB_DIRECTORY
    assert sorted(path.name for path in web.glob("*.js")) == ["load_video.js", "preview.js", "text2video.js"]


@pytest.mark.parametrize("node_id", sorted(CONTRACT))
def test_inputs_and_outputs_follow_the_contract(node_id):
    required, optional, outputs = CONTRACT[node_id]
    node = NODE_CLASS_MAPPINGS[node_id]
    declared = node.INPUT_TYPES()
    assert list(declared["required"]) == required
    assert list(declared.get("optional", {})) == optional
    assert tuple(node.RETURN_TYPES) == outputs


@pytest.mark.parametrize("node_id", sorted(CONTRACT))
def test_every_node_is_documented(node_id):
    node = NODE_CLASS_MAPPINGS[node_id]
    assert node.CATEGORY.startswith("Text2Video/")
    assert len(node.DESCRIPTION) > 40
    assert callable(getattr(node, node.FUNCTION))
    declared = node.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, spec in declared.get(section, {}).items():
            assert len(spec) == 2 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_save_video_is_the_output_node():
    outputs = [node_id for node_id, node in NODE_CLASS_MAPPINGS.items() if getattr(node, "OUTPUT_NODE", False)]
    assert outputs == ["T2VSaveVideo"]


def test_text2video_zero_defaults_are_the_references():
    required = NODE_CLASS_MAPPINGS["T2VText2VideoZero"].INPUT_TYPES()["required"]
    defaults = {name: spec[1].get("default") for name, spec in required.items() if len(spec) > 1}
    assert {k: defaults[k] for k in ("frames", "steps", "cfg", "motion_x", "motion_y", "t0", "t1", "chunk_size")} \
        == {"frames": 8, "steps": 50, "cfg": 7.5, "motion_x": 12.0, "motion_y": 12.0, "t0": 44, "t1": 47,
            "chunk_size": 0}
