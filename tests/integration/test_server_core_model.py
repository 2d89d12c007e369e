"""Text2Video-Zero on the user's own ComfyUI models: a checkpoint saved by ComfyUI, a LoRA, core samplers,
a core ControlNet and core InstructPix2Pix, with the pack's three core-model nodes.

The model files are made by `core_model_files.py` in ComfyUI's interpreter and joined by core `CheckpointSave`
into single-file checkpoints that only ComfyUI's loaders ever read.
"""

from __future__ import annotations

import json
import sys

import pytest
from safetensors.torch import load_file

from api_workflows import link, node
from comfy_harness import PACK_ROOT
from core_model_files import CONTROLNET_NAME, LORA_NAME
from saved_outputs import frame_count, written_files
from user_models import RUN_TIMEOUT, make_model_files, run_in_comfyui_python, save_checkpoints

EXAMPLES = PACK_ROOT / "example_workflows"
CORE_EXAMPLES = ["text2video_zero_checkpoint", "text2video_zero_controlnet", "video_instruct_pix2pix_checkpoint"]
SMALL_ZERO = {"6.width": 64, "6.height": 64, "7.steps": 4, "7.t0": 1, "7.t1": 2, "10.frames": 4}
"""Text2Video-Zero examples at 64x64, 4 steps (t0 1, t1 2), 4 frames."""


def example(name: str, settings: dict) -> dict:
    """An example workflow's API twin with `settings` ("node.input": value; every input must exist) applied."""
    prompt = json.loads((EXAMPLES / "api" / f"{name}.json").read_text())
    for key, value in settings.items():
        node_id, input_name = key.split(".")
        assert input_name in prompt[node_id]["inputs"], key
        prompt[node_id]["inputs"][input_name] = value
    return prompt


def zero_example(checkpoints: dict, prefix: str, **settings) -> dict:
    """text2video_zero_checkpoint with the test's checkpoint and LoRA, small."""
    return example("text2video_zero_checkpoint", {**SMALL_ZERO, "1.ckpt_name": checkpoints["t2v-it-sd15"],
                                                  "2.lora_name": f"{LORA_NAME}.safetensors",
                                                  "13.filename_prefix": prefix, **settings})


def unpatched_last_sampler(prompt: dict) -> dict:
    """The example's last sampler (node 11) on the LoRA'd model without the cross-frame patch."""
    return {**prompt["11"], "inputs": {**prompt["11"]["inputs"], "model": link("2")}}


@pytest.fixture(scope="module")
def model_files(comfy) -> dict:
    return make_model_files(comfy)


@pytest.fixture(scope="module")
def checkpoints(comfy, model_files) -> dict[str, str]:
    return save_checkpoints(comfy)


def saved_latent(comfy, run, node_id: str):
    (entry,) = run.outputs[node_id]["latents"]
    return load_file(str(comfy.output_dir / entry["subfolder"] / entry["filename"]))["latent_tensor"]


def test_the_patched_sd_and_sdxl_unets_equal_diffusers_cross_frame_processor_inside_comfyui(comfy, model_files):
    figures = run_in_comfyui_python("core_model_check.py", comfy.base)
    print("core model check:", json.dumps(figures), file=sys.stderr)
    assert figures["patched_vs_diffusers_cross_frame"] < 1e-4
    assert figures["plain_vs_diffusers_plain"] < 1e-4  # the same weights on both sides
    assert figures["patched_vs_plain"] > 1e-2  # the patch acts, so the first comparison can fail
    assert figures["frame_0_patched_vs_plain"] < 1e-5  # frame 0 attends to itself only
    assert figures["lora_then_patch_vs_patch_then_lora"] == 0.0 and figures["lora_effect"] > 1e-2
    assert figures["plain_before_vs_after_patched_run"] == 0.0
    assert figures["sdxl_patched_vs_diffusers_cross_frame"] < 1e-4 and figures["sdxl_plain_vs_diffusers_plain"] < 1e-4
    assert figures["sdxl_patched_vs_plain"] > 1e-2
    assert figures["controlnet_attention_vs_diffusers_cross_frame"] < 1e-4
    assert figures["controlnet_frame_0_patched_vs_plain"] < 1e-5 and figures["controlnet_hook_effect"] > 1e-4
    assert figures["controlnet_hooks_left"] == 0


def test_text2video_zero_from_a_saved_checkpoint_and_a_lora_on_core_samplers(comfy, checkpoints):
    prompt = zero_example(checkpoints, "it/core-zero")
    first = prompt["8"]["inputs"]
    prompt.update({  # beside it: a plain KSampler image, and the last sampler on the unpatched model
        "20": node("KSampler", model=link("2"), seed=first["noise_seed"], steps=SMALL_ZERO["7.steps"], cfg=first["cfg"],
                   sampler_name=first["sampler_name"], scheduler=first["scheduler"], positive=link("4"),
                   negative=link("5"), latent_image=link("6"), denoise=1.0),
        "21": unpatched_last_sampler(prompt),
        "30": node("SaveLatent", samples=link("11"), filename_prefix="it/core-zero"),
        "31": node("SaveLatent", samples=link("20"), filename_prefix="it/core-plain"),
        "32": node("SaveLatent", samples=link("21"), filename_prefix="it/core-unpatched"),
    })
    run = comfy.run(prompt, timeout=RUN_TIMEOUT)
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run, "13")
    assert frame_count(video) == 4
    zero, plain, unpatched = (saved_latent(comfy, run, node_id) for node_id in ("30", "31", "32"))
    assert zero.shape == (4, 4, 8, 8) and plain.shape == (1, 4, 8, 8)

    scale = float(plain.abs().max())
    frame_0_diff = float((zero[0] - plain[0]).abs().max()) / scale
    frame_0_unpatched = float((zero[0] - unpatched[0]).abs().max()) / scale
    patch_effect = float((zero[1:] - unpatched[1:]).abs().mean()) / float(unpatched[1:].abs().mean())
    distance = lambda video: float((video[1:] - video[:1]).abs().mean())  # noqa: E731
    print(f"core T2V-Zero: frame 0 vs plain KSampler {frame_0_diff:.1e} (relative to the latent's largest value "
          f"{scale:.1f}), vs unpatched {frame_0_unpatched:.1e}; frames 1..3 vs unpatched {patch_effect:.3f} (mean, "
          f"relative); mean |frame i - frame 0|: cross-frame {distance(zero):.3f}, unpatched {distance(unpatched):.3f}",
          file=sys.stderr)
    assert frame_0_diff < 1e-5  # frame 0 is the plain image
    assert frame_0_unpatched < 1e-5  # frame 0 attends to itself only
    assert patch_effect > 1e-3  # the other frames attend to frame 0


def test_the_patch_does_not_reach_a_branch_on_the_unpatched_model(comfy, checkpoints):
    """The unpatched last sampler gives the same video whether or not a patched branch ran in the same prompt."""
    both = zero_example(checkpoints, "it/core-leak-both")
    both["21"] = unpatched_last_sampler(both)
    both["31"] = node("SaveLatent", samples=link("21"), filename_prefix="it/core-leak-both")
    alone = {key: value for key, value in both.items() if key not in ("3", "11", "12", "13")}
    # add_noise is disabled, so the seed changes nothing but ComfyUI's cache key: the sampler really runs again
    alone["21"] = {**alone["21"], "inputs": {**alone["21"]["inputs"], "noise_seed": both["21"]["inputs"]["noise_seed"] + 1}}
    alone["31"] = node("SaveLatent", samples=link("21"), filename_prefix="it/core-leak-alone")
    first, second = comfy.run(both, timeout=RUN_TIMEOUT), comfy.run(alone, timeout=RUN_TIMEOUT)
    assert first.status == "success", first.error()
    assert second.status == "success", second.error()
    assert "21" in [entry["node"] for entry in second.of_type("executing") if entry.get("node")]
    assert float((saved_latent(comfy, first, "31") - saved_latent(comfy, second, "31")).abs().max()) == 0.0


def test_text2video_zero_with_a_core_controlnet_on_canny_edges_of_a_loaded_video(comfy, checkpoints, sample_video):
    prompt = example("text2video_zero_controlnet", {  # size and frames come from the video (GetImageSize)
        "7.steps": SMALL_ZERO["7.steps"], "7.t0": SMALL_ZERO["7.t0"], "7.t1": SMALL_ZERO["7.t1"],
        "1.ckpt_name": checkpoints["t2v-it-sd15"], "2.lora_name": f"{LORA_NAME}.safetensors",
        "20.file": sample_video.name, "23.control_net_name": f"{CONTROLNET_NAME}.safetensors",
        "13.filename_prefix": "it/core-controlnet"})
    prompt["30"] = node("SaveLatent", samples=link("11"), filename_prefix="it/core-controlnet")
    without = zero_example(checkpoints, "it/core-no-controlnet", **{"10.frames": 6})
    without["30"] = node("SaveLatent", samples=link("11"), filename_prefix="it/core-no-controlnet")
    run, without = comfy.run(prompt, timeout=RUN_TIMEOUT), comfy.run(without, timeout=RUN_TIMEOUT)
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run, "13")
    assert frame_count(video) == 6
    assert float((saved_latent(comfy, run, "30") - saved_latent(comfy, without, "30")).abs().max()) > 1e-3


def test_video_instruct_pix2pix_with_core_conditioning_and_dual_cfg(comfy, checkpoints, sample_video):
    prompt = example("video_instruct_pix2pix_checkpoint", {
        "1.ckpt_name": checkpoints["t2v-it-sd15-ip2p"], "20.file": sample_video.name, "10.steps": 4,
        "13.filename_prefix": "it/core-ip2p"})
    run = comfy.run(prompt, timeout=RUN_TIMEOUT)
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run, "13")
    assert frame_count(video) == 6


def server_node_classes(object_info: dict) -> dict[str, type]:
    """Classic-API stand-ins for the server's nodes, read from `/object_info`, for reading editor files."""
    def stand_in(class_type: str, info: dict) -> type:
        declared = {section: {name: info["input"][section][name] for name in info["input_order"].get(section, [])}
                    for section in ("required", "optional")}
        return type(class_type, (), {"INPUT_TYPES": classmethod(lambda cls: declared), "FUNCTION": "run",
                                     "RETURN_TYPES": tuple(info["output"]), "run": lambda self, **inputs: None,
                                     "OUTPUT_NODE": info.get("output_node", False)})
    return {class_type: stand_in(class_type, info) for class_type, info in object_info.items()}


@pytest.mark.parametrize("name", CORE_EXAMPLES)
def test_core_model_examples_editor_file_and_api_twin_give_the_same_prompt(comfy, name):
    from comfyui_text2video.headless.workflow import NodeSpecs, load_workflow

    specs = NodeSpecs(server_node_classes(comfy.object_info()))
    from_editor = load_workflow(json.loads((EXAMPLES / f"{name}.json").read_text()), specs)
    api = json.loads((EXAMPLES / "api" / f"{name}.json").read_text())
    assert not from_editor.problems
    assert from_editor.prompt.keys() == api.keys()
    for node_id, api_node in api.items():
        editor_node = from_editor.prompt[node_id]
        assert editor_node["class_type"] == api_node["class_type"]
        assert {key: editor_node["inputs"][key] for key in api_node["inputs"]} == api_node["inputs"], node_id
