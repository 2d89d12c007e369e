"""The pack's data types flow into and out of ComfyUI's core nodes."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

import api_workflows as wf
from saved_outputs import frame_count, written_files


@pytest.fixture(scope="module")
def input_frames(comfy) -> list[str]:
    """Two 64x64 PNG frames in the input folder, for core LoadImage."""
    names = []
    for index in range(2):
        pixels = np.full((64, 64, 3), 60 * index, dtype=np.uint8)
        pixels[16:48, 8 + 8 * index:40 + 8 * index] = (250, 120, 30)
        name = f"it-frame-{index}.png"
        Image.fromarray(pixels).save(comfy.input_dir / name)
        names.append(name)
    return names


def test_pack_images_go_into_core_save_animated_webp_and_preview_image(comfy):
    prompt = wf.text_to_video("it/unused", seed=41, steps=1)
    del prompt["7"]
    prompt["8"] = wf.node("SaveAnimatedWEBP", images=wf.link("6"), filename_prefix="it/core-webp", fps=8.0,
                          lossless=False, quality=80, method="default")
    prompt["9"] = wf.node("PreviewImage", images=wf.link("6"))
    run = comfy.run(prompt)
    assert run.status == "success", run.error()
    (webp,) = run.outputs["8"]["images"]
    path = comfy.output_dir / webp["subfolder"] / webp["filename"]
    with Image.open(path) as image:
        assert image.n_frames == wf.FRAMES and image.size == (wf.SIZE, wf.SIZE)
    previews = run.outputs["9"]["images"]
    assert len(previews) == wf.FRAMES and all(entry["type"] == "temp" for entry in previews)


def test_core_load_image_frames_go_into_video_to_video(comfy, input_frames):
    images = {"11": wf.node("LoadImage", image=input_frames[0]), "12": wf.node("LoadImage", image=input_frames[1]),
              "10": wf.node("ImageBatch", image1=wf.link("11"), image2=wf.link("12"))}
    run = comfy.run(wf.video_to_video(images, "it/v2v-load-image", seed=42))
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run)
    assert frame_count(video) == 2


def test_core_load_video_components_go_into_video_to_video(comfy, sample_video):
    images = {"11": wf.node("LoadVideo", file=sample_video.name), "10": wf.node("GetVideoComponents", video=wf.link("11"))}
    run = comfy.run(wf.video_to_video(images, "it/v2v-load-video", seed=43))
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run)
    assert frame_count(video) == 6


def test_core_load_video_feeds_video_to_video_directly_and_the_save_node_keeps_its_fps(comfy, sample_video):
    """A core VIDEO goes into T2VVideoToVideo without GetVideoComponents; T2VSaveVideo saves a VIDEO at its fps."""
    images = {"10": wf.node("LoadVideo", file=sample_video.name)}
    prompt = wf.video_to_video(images, "it/v2v-video", seed=43)
    prompt["8"] = wf.node("T2VSaveVideo", images=wf.link("10"), fps=30.0, filename_prefix="it/resaved", format="webm",
                          quality=80)
    run = comfy.run(prompt)
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run)
    assert frame_count(video) == 6
    (resaved,) = written_files(comfy, run, "8")
    with av.open(str(resaved)) as container:
        assert container.streams.video[0].average_rate == 8  # the source's, not the widget's 30


def test_pack_frames_go_to_core_save_video(comfy):
    prompt = wf.text_to_video("it/unused", seed=45, steps=1)
    del prompt["7"]
    prompt["8"] = wf.node("CreateVideo", images=wf.link("6"), fps=12.0)
    prompt["9"] = wf.node("SaveVideo", video=wf.link("8"), filename_prefix="it/core-save-video", format="mp4",
                          codec="h264")
    run = comfy.run(prompt)
    assert run.status == "success", run.error()
    (saved,) = run.outputs["9"]["images"]
    with av.open(str(comfy.output_dir / saved["subfolder"] / saved["filename"])) as container:
        assert container.streams.video[0].average_rate == 12
        assert sum(1 for _ in container.decode(video=0)) == wf.FRAMES


def test_core_conditioning_nodes_work_on_pack_conditioning(comfy):
    prompt = wf.text_to_video("it/core-conditioning", seed=44, steps=2)
    prompt["30"] = wf.node("ConditioningZeroOut", conditioning=wf.link("3"))
    prompt["31"] = wf.node("ConditioningAverage", conditioning_to=wf.link("2"), conditioning_from=wf.link("30"),
                           conditioning_to_strength=0.75)
    prompt["32"] = wf.node("ConditioningConcat", conditioning_to=wf.link("31"), conditioning_from=wf.link("2"))
    prompt["5"]["inputs"].update(positive=wf.link("32"), negative=wf.link("30"))
    run = comfy.run(prompt)
    assert run.status == "success", run.error()
    written_files(comfy, run)


def test_core_empty_latent_image_is_read_as_one_video_for_partial_denoising(comfy):
    prompt = wf.text_to_video("it/core-latent", seed=45, steps=4)
    prompt["4"] = wf.node("EmptyLatentImage", width=wf.SIZE, height=wf.SIZE, batch_size=3)
    prompt["5"]["inputs"]["denoise"] = 0.5
    run = comfy.run(prompt)
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run)
    assert frame_count(video) == 3


def test_an_uploaded_video_is_offered_by_t2v_load_video(comfy, sample_video, object_info_choices):
    uploaded = comfy.upload(sample_video)
    assert uploaded["type"] == "input"
    assert uploaded["name"] in object_info_choices("T2VLoadVideo", "video")
    assert uploaded["name"] in object_info_choices("LoadVideo", "file")


def test_core_load_image_drives_stable_video_diffusion(comfy, input_frames):
    prompt = {
        "1": wf.node("T2VModelLoader", model_name="builtin:tiny-svd", dtype="auto"),
        "2": wf.node("LoadImage", image=input_frames[1]),
        "3": wf.node("T2VSVDConditioning", clip=wf.link("1", 1), vae=wf.link("1", 2), image=wf.link("2"), width=64,
                     height=48, frames=3, fps=7, motion_bucket_id=127, noise_aug_strength=0.02, seed=5, min_cfg=1.0),
        "4": wf.node("T2VSampler", model=wf.link("1"), positive=wf.link("3"), negative=wf.link("3", 1),
                     latent=wf.link("3", 2), seed=5, steps=2, cfg=3.0, sampler_name="euler", scheduler="karras",
                     denoise=1.0),
        "5": wf.node("T2VVAEDecode", vae=wf.link("1", 2), latent=wf.link("4")),
        "7": wf.save_video(wf.link("5"), "it/svd-load-image"),
    }
    run = comfy.run(prompt)
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run)
    assert frame_count(video) == 3


def test_core_load_image_drives_i2vgen_xl(comfy, input_frames):
    prompt = {
        **wf.model_and_prompts("builtin:tiny-i2vgen-xl"),
        "5": wf.node("LoadImage", image=input_frames[1]),
        "6": wf.node("T2VI2VGenXLConditioning", positive=wf.link("2"), negative=wf.link("3"), clip=wf.link("1", 1),
                     vae=wf.link("1", 2), image=wf.link("5"), width=64, height=48, frames=3, target_fps=16, seed=5),
        "7": wf.node("T2VSampler", model=wf.link("1"), positive=wf.link("6"), negative=wf.link("6", 1),
                     latent=wf.link("6", 2), seed=5, steps=2, cfg=9.0, sampler_name="ddim", scheduler="normal",
                     denoise=1.0),
        "8": wf.node("T2VVAEDecode", vae=wf.link("1", 2), latent=wf.link("7")),
        "9": wf.save_video(wf.link("8"), "it/i2vgen-load-image"),
    }
    run = comfy.run(prompt)
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run, "9")
    assert frame_count(video) == 3


def test_animatediff_with_the_builtin_motion_adapter_runs(comfy):
    prompt = {
        **wf.model_and_prompts("builtin:tiny-sd15"),
        "5": wf.node("T2VMotionAdapterLoader", adapter_name="builtin:tiny-motion-adapter"),
        "6": wf.node("T2VApplyMotionAdapter", model=wf.link("1"), motion_adapter=wf.link("5")),
        "7": wf.node("T2VEmptyLatentVideo", width=64, height=48, frames=4, batch_size=1),
        "8": wf.node("T2VSampler", model=wf.link("6"), positive=wf.link("2"), negative=wf.link("3"),
                     latent=wf.link("7"), seed=5, steps=2, cfg=7.5, sampler_name="ddim", scheduler="normal",
                     denoise=1.0),
        "9": wf.node("T2VVAEDecode", vae=wf.link("1", 2), latent=wf.link("8")),
        "10": wf.save_video(wf.link("9"), "it/animatediff"),
    }
    run = comfy.run(prompt)
    assert run.status == "success", run.error()
    (video,) = written_files(comfy, run, "10")
    assert frame_count(video) == 4
