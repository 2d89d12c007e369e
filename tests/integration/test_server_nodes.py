"""The pack as ComfyUI's `/object_info` shows it: every contract node, its inputs in order, tooltips, types."""

from __future__ import annotations

import pytest

from comfy_harness import PACK_FOLDER_NAME

# DESIGN.md section 4: node id -> (required inputs, optional inputs, output types). Saved UI workflows store
# widget values by position, so these names and their order never change; new inputs are appended at the end.
CONTRACT = {
    "T2VModelLoader": (["model_name", "dtype"], [], ["T2V_MODEL", "T2V_CLIP", "T2V_VAE"]),
    "T2VTextEncode": (["clip", "text"], [], ["CONDITIONING"]),
    "T2VEmptyLatentVideo": (["width", "height", "frames", "batch_size"], [], ["LATENT"]),
    "T2VSampler": (["model", "positive", "negative", "latent", "seed", "steps", "cfg", "sampler_name", "scheduler",
                    "denoise"], ["eta", "start_step", "end_step", "add_noise", "return_with_leftover_noise"],
                   ["LATENT"]),
    "T2VVAEEncode": (["vae", "images"], ["frames_per_batch"], ["LATENT"]),
    "T2VVAEDecode": (["vae", "latent"], ["frames_per_batch"], ["IMAGE"]),
    "T2VVideoToVideo": (["model", "positive", "negative", "vae", "images", "seed", "steps", "cfg", "sampler_name",
                         "scheduler", "strength"], ["width", "height", "frames_per_batch"], ["LATENT"]),
    "T2VCrossFrameAttention": (["model"], [], ["T2V_MODEL"]),
    "T2VMotionFieldLatent": (None, None, ["LATENT"]),  # inputs designed freely (DESIGN.md section 6)
    "T2VText2VideoZero": (["model", "positive", "negative", "seed", "steps", "cfg", "sampler_name", "scheduler",
                           "width", "height", "frames", "motion_x", "motion_y", "t0", "t1", "chunk_size"], [],
                          ["LATENT"]),
    "T2VLoadVideo": (["video", "frame_limit", "skip_first", "select_every_nth"], ["width", "height"],
                     ["IMAGE", "FLOAT", "INT"]),
    "T2VSaveVideo": (["images", "fps", "filename_prefix", "format"], ["quality"], []),
}
CORE_DATA_TYPES = {"CONDITIONING", "LATENT", "IMAGE", "VIDEO", "MODEL"}
"""Data sockets use core types, so core nodes connect (a frame input takes "IMAGE,VIDEO", core's way of
listing accepted types); the pack's models and patches have types of their own, named T2V_*."""


@pytest.fixture(scope="module")
def object_info(comfy) -> dict:
    return comfy.object_info()


def pack_nodes(object_info: dict) -> dict:
    return {name: info for name, info in object_info.items()
            if info.get("python_module") == f"custom_nodes.{PACK_FOLDER_NAME}"}


@pytest.mark.parametrize("node_id", CONTRACT)
def test_contract_node_is_registered_with_its_inputs_in_order(object_info, node_id):
    if node_id not in object_info:
        pytest.fail(f"{node_id} is not in /object_info; pack nodes: {sorted(pack_nodes(object_info))}")
    info = object_info[node_id]
    required, optional, outputs = CONTRACT[node_id]
    order = info["input_order"]
    if required is not None:
        assert order["required"] == required, f"{node_id}: required inputs changed"
        assert order.get("optional", [])[:len(optional)] == optional, f"{node_id}: optional inputs changed"
    assert info["output"] == outputs
    assert info["category"].startswith("Text2Video"), info["category"]
    assert info["description"], f"{node_id} has no description"
    assert info["python_module"] == f"custom_nodes.{PACK_FOLDER_NAME}"


def test_every_pack_node_has_a_description_and_a_tooltip_on_every_input(object_info):
    nodes = pack_nodes(object_info)
    assert not [node_id for node_id, info in nodes.items() if not info["description"]], "nodes without a description"
    missing = [f"{node_id}.{name}" for node_id, info in nodes.items()
               for section in ("required", "optional") for name, spec in info["input"].get(section, {}).items()
               if len(spec) < 2 or not spec[1].get("tooltip")]
    assert not missing, f"inputs without a tooltip: {missing}"


def test_the_text2video_model_folder_is_registered_beside_diffusers(comfy):
    folders = comfy.get("/models")
    assert "text2video" in folders and "diffusers" in folders


def test_pack_nodes_use_the_contract_socket_types(object_info):
    """Model sockets carry the pack's own types; data sockets the core ones, so core nodes connect."""
    for node_id, info in pack_nodes(object_info).items():
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                kind = spec[0]
                if isinstance(kind, str) and kind.isupper() and kind not in ("INT", "FLOAT", "STRING", "BOOLEAN",
                                                                             "COMBO"):
                    assert all(part.startswith("T2V_") or part in CORE_DATA_TYPES for part in kind.split(",")), \
                        f"{node_id}.{name} has socket type {kind}"


def test_load_video_has_an_upload_button(object_info):
    spec = object_info["T2VLoadVideo"]["input"]["required"]["video"]
    assert isinstance(spec[0], list), "video must be a combo of the input folder's videos"
    assert spec[1].get("video_upload") is True


def test_save_video_is_an_output_node(object_info):
    assert object_info["T2VSaveVideo"]["output_node"] is True


def test_the_pack_imported_without_errors(comfy):
    assert comfy.pack_import_failure() is None
    assert f"{PACK_FOLDER_NAME}" in comfy.log(), "the server log does not mention the pack at all"
