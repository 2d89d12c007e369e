"""API-queued workflows on the real server: they run, write their files, report progress and errors."""

from __future__ import annotations

import pytest

import api_workflows as wf
from comfy_harness import HTTPFailure
from model_builder import UNSEEN_MODEL
from saved_outputs import decoded_frames, frame_count, written_files

SLOW_SIZE, SLOW_FRAMES = 128, 8
"""A sampler step that takes a while even on a fast CPU, so an interrupt lands within a step."""
COMPOSED_ZERO_NODES = ("T2VCrossFrameAttention", "T2VMotionFieldLatent", "T2VZeroSteps")
FINAL_SAMPLER = "26"
"""The cross-frame sampler of the composed Text2Video-Zero graph."""
UNET_2D_LOAD = "Requested to load T2VUNet2DConditionModel"
"""ComfyUI's log line when a (new) image UNet enters its model management."""


def test_text_to_video_writes_its_video_and_shows_a_preview(comfy):
    run = comfy.run(wf.text_to_video("it/t2v", seed=11, steps=2))
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run)
    assert video.suffix == ".mp4" and frame_count(video) == wf.FRAMES
    assert run.outputs["7"].get("animated") == [True], "the editor shows the saved video as an animation"
    executed = {message["node"]: message["output"] for message in run.of_type("executed")}
    assert executed["7"]["images"] == run.outputs["7"]["images"]


def test_a_model_folder_the_pack_never_saw_runs(comfy, object_info_choices):
    assert UNSEEN_MODEL in object_info_choices("T2VModelLoader", "model_name")
    run = comfy.run(wf.text_to_video("it/unseen", seed=3, steps=1, model_name=UNSEEN_MODEL, frames=2))
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run)
    assert frame_count(video) == 2


def test_progress_messages_arrive_for_every_sampler_step(comfy):
    steps = 5
    run = comfy.run(wf.text_to_video("it/progress", seed=12, steps=steps, format="webp"))
    assert run.status == "success", run.error()
    sampler_progress = [(p["value"], p["max"]) for p in run.of_type("progress") if p["node"] == "5"]
    assert sampler_progress == [(step, steps) for step in range(1, steps + 1)]


def test_video_to_video_from_the_packs_loader_writes_its_video(comfy, sample_video):
    images = {"10": wf.node("T2VLoadVideo", video=sample_video.name, frame_limit=0, skip_first=0,
                            select_every_nth=1, width=0, height=0)}
    run = comfy.run(wf.video_to_video(images, "it/v2v", seed=4))
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run)
    assert frame_count(video) == 6


def test_text2video_zero_writes_its_video(comfy, require_nodes):
    require_nodes("T2VText2VideoZero")
    run = comfy.run(wf.text2video_zero("it/zero", seed=5))
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run)
    assert frame_count(video) == 3


def test_composed_text2video_zero_graph_runs(comfy, require_nodes):
    require_nodes(*COMPOSED_ZERO_NODES)
    run = comfy.run(composed_zero_prompt(comfy.object_info("T2VMotionFieldLatent"), "it/zero-composed", 6, 2, 3))
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run)
    assert frame_count(video) == 3


def composed_zero_prompt(motion_info: dict, prefix: str, steps: int, t0: int, t1: int) -> dict:
    """DESIGN.md section 6 as a graph: frame 0 to t1 and to t0, the motion latent, a cross-frame sampler from t1."""
    prompt = {
        **wf.model_and_prompts(wf.TINY_SD),
        "20": wf.node("T2VZeroSteps", steps=steps, t0=t0, t1=t1),
        "21": wf.node("T2VEmptyLatentVideo", width=wf.SIZE, height=wf.SIZE, frames=1, batch_size=1),
        "22": wf.sampler(wf.link("21"), 7, steps, end_step=wf.link("20", 0), return_with_leftover_noise=True),
        "23": wf.sampler(wf.link("22"), 7, steps, start_step=wf.link("20", 0), end_step=wf.link("20", 1),
                         add_noise=False, return_with_leftover_noise=True),
        "24": wf.node("T2VCrossFrameAttention", model=wf.link("1")),
    }
    known = {"latent_t1": wf.link("22"), "latent_t0": wf.link("23"), "frames": 3, "motion_x": 12.0, "motion_y": 12.0}
    unknown = [name for name in motion_info["input_order"]["required"] if name not in known]
    if unknown:
        pytest.fail(f"T2VMotionFieldLatent has inputs this test does not know: {unknown}")
    prompt["25"] = wf.node("T2VMotionFieldLatent", **{name: known[name]
                                                       for name in motion_info["input_order"]["required"]})
    final = wf.sampler(wf.link("25"), 7, steps, start_step=wf.link("20", 0), add_noise=False)
    final["inputs"]["model"] = wf.link("24")
    prompt[FINAL_SAMPLER] = final
    prompt["6"] = wf.node("T2VVAEDecode", vae=wf.link("1", 2), latent=wf.link(FINAL_SAMPLER), frames_per_batch=8)
    prompt["7"] = wf.save_video(wf.link("6"), prefix)
    return prompt


def test_interrupted_cross_frame_sampling_leaves_no_patch_installed(comfy, require_nodes):
    """Interrupt the cross-frame sampler, then sample the same (unpatched) model: it matches a run from before."""
    require_nodes(*COMPOSED_ZERO_NODES)
    reference = comfy.run(wf.text_to_video("it/unpatched-before", seed=21, steps=2, model_name=wf.TINY_SD, frames=2))
    assert reference.status == "success", reference.error()

    def interrupt_at_step_two(message):
        data = message["data"]
        if message["type"] == "progress" and data["node"] == FINAL_SAMPLER and data["value"] == 2:
            comfy.post("/interrupt")

    long_run = composed_zero_prompt(comfy.object_info("T2VMotionFieldLatent"), "it/zero-interrupted", 200, 196, 198)
    interrupted = comfy.run(long_run, on_message=interrupt_at_step_two)
    assert interrupted.of_type("execution_interrupted"), interrupted.error()
    # eta given explicitly (its default): ComfyUI samples again, with the very UNet that was patched
    unet_loads = comfy.log().count(UNET_2D_LOAD)
    again_prompt = wf.text_to_video("it/unpatched-after", seed=21, steps=2, model_name=wf.TINY_SD, frames=2)
    again_prompt["5"]["inputs"]["eta"] = 0.0
    again = comfy.run(again_prompt)
    assert again.status == "success", again.error()
    assert "5" not in again.of_type("execution_cached")[0]["nodes"], "the sampler must run again"
    assert comfy.log().count(UNET_2D_LOAD) == unet_loads, "the sampler must get the UNet that was patched"
    (before,), (after,) = written_files(comfy, reference), written_files(comfy, again)
    assert decoded_frames(before) == decoded_frames(after)


@pytest.mark.parametrize("input_name, value, error_type", [
    ("steps", 0, "value_smaller_than_min"),
    ("sampler_name", "no_such_sampler", "value_not_in_list"),
])
def test_invalid_values_are_refused_with_http_400_naming_node_and_input(comfy, input_name, value, error_type):
    prompt = wf.text_to_video("it/invalid")
    prompt["5"]["inputs"][input_name] = value
    with pytest.raises(HTTPFailure) as failure:
        comfy.queue(prompt)
    assert failure.value.status == 400
    errors = failure.value.body["node_errors"]["5"]
    assert errors["class_type"] == "T2VSampler"
    assert any(e["type"] == error_type and e["extra_info"]["input_name"] == input_name for e in errors["errors"]), \
        errors


def test_a_wrong_link_type_is_refused_with_http_400(comfy):
    prompt = wf.text_to_video("it/badlink")
    prompt["6"]["inputs"]["latent"] = wf.link("2")  # CONDITIONING into a LATENT input
    with pytest.raises(HTTPFailure) as failure:
        comfy.queue(prompt)
    assert failure.value.status == 400
    errors = failure.value.body["node_errors"]["6"]["errors"]
    assert errors[0]["type"] == "return_type_mismatch" and errors[0]["extra_info"]["input_name"] == "latent"


def test_an_escaping_filename_prefix_is_refused_with_http_400(comfy):
    prompt = wf.text_to_video("it/escape")
    prompt["7"]["inputs"]["filename_prefix"] = "../../outside"
    with pytest.raises(HTTPFailure) as failure:
        comfy.queue(prompt)
    assert failure.value.status == 400
    errors = failure.value.body["node_errors"]["7"]
    assert errors["class_type"] == "T2VSaveVideo"
    assert any("filename_prefix" in e["details"] and "output folder" in e["details"] for e in errors["errors"]), errors
    assert not list(comfy.base.glob("outside*")), "a file escaped the output folder"


def test_a_runtime_input_error_names_the_node_and_input(comfy):
    prompt = wf.text_to_video("it/karras")
    prompt["5"]["inputs"]["scheduler"] = "karras"  # ddim has no Karras sigmas: found when the sampler runs
    run = comfy.run(prompt)
    assert run.status == "error"
    (error,) = run.of_type("execution_error")
    assert error["node_type"] == "T2VSampler"
    assert "input 'scheduler'" in error["exception_message"] and "Karras" in error["exception_message"]


def test_interrupt_stops_a_long_run_within_a_step_and_the_next_prompt_runs(comfy):
    steps = 400
    interrupted_at = []

    def interrupt_at_step_two(message):
        data = message["data"]
        if message["type"] == "progress" and data["node"] == "5" and data["value"] == 2:
            interrupted_at.append(data["value"])
            comfy.post("/interrupt")

    run = comfy.run(wf.text_to_video("it/interrupted", seed=13, steps=steps, size=SLOW_SIZE, frames=SLOW_FRAMES),
                    on_message=interrupt_at_step_two)
    assert interrupted_at, "no sampler progress arrived"
    assert run.of_type("execution_interrupted"), [m["type"] for m in run.messages]
    last_step = max(p["value"] for p in run.of_type("progress") if p["node"] == "5")
    assert last_step <= 3, f"the sampler ran on to step {last_step} after the interrupt at step 2"
    assert "7" not in run.outputs
    after = comfy.run(wf.text_to_video("it/after-interrupt", seed=14, steps=2))
    assert after.status == "success", after.error()
    written_files(comfy, after)
