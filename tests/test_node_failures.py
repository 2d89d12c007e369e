"""An exception inside a node leaves nothing behind: no patch installed, no model changed, no file; the next
prompt runs and gives what a clean run gives. One test per node family, through the runner in-process."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from comfyui_text2video import bridge
from comfyui_text2video.attention.cross_frame import CrossFrameAttentionProcessor
from comfyui_text2video.headless.runner import NodeExecutionError, RunInterrupted, run_workflow
from comfyui_text2video.media import video_io
from comfyui_text2video.models.loading import load_model


def zero_workflow(prefix: str) -> dict:
    """Text2Video-Zero composed by hand: tiny-sd15 -> cross-frame attention -> sampler -> decode -> png frames."""
    return {
        "1": {"class_type": "T2VModelLoader", "inputs": {"model_name": "builtin:tiny-sd15", "dtype": "float32"}},
        "2": {"class_type": "T2VTextEncode", "inputs": {"clip": ["1", 1], "text": "a fox"}},
        "3": {"class_type": "T2VEmptyLatentVideo", "inputs": {"width": 16, "height": 16, "frames": 3,
                                                               "batch_size": 1}},
        "4": {"class_type": "T2VCrossFrameAttention", "inputs": {"model": ["1", 0]}},
        "5": {"class_type": "T2VSampler", "inputs": {
            "model": ["4", 0], "positive": ["2", 0], "negative": ["2", 0], "latent": ["3", 0], "seed": 5,
            "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "T2VVAEDecode", "inputs": {"vae": ["1", 2], "latent": ["5", 0]}},
        "7": {"class_type": "T2VSaveVideo", "inputs": {"images": ["6", 0], "fps": 8.0, "filename_prefix": prefix,
                                                       "format": "png"}},
    }


@pytest.fixture
def output(tmp_path):
    bridge.set_folders(output=tmp_path / "output")
    yield tmp_path / "output"
    bridge.reset_folders()


def frames_of(summary: dict) -> list:
    """The saved frames' pixels (the files differ in the embedded prompt)."""
    return video_io.read_frames(Path(summary["outputs"][0]["files"][0]).parent).frames.tolist()


def model_state(module) -> tuple:
    """What a failure must not change: processors, devices, dtypes, weights, hooks."""
    processors = dict(getattr(module, "attn_processors", {}))
    return (processors, {p.device for p in module.parameters()}, {p.dtype for p in module.parameters()},
            sum(float(p.double().sum()) for p in module.parameters()),
            sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in module.modules()))


@contextlib.contextmanager
def failing_call(module, error: BaseException, on_call: int = 1, check=None):
    """`module` raises `error` on its `on_call`-th forward (after `check(module)`), for the duration."""
    calls = []

    def hook(_module, _args):
        calls.append(1)
        if len(calls) == on_call:
            if check is not None:
                check()
            raise error

    handle = module.register_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


@pytest.mark.parametrize("error", [RuntimeError("CUDA out of memory"), KeyboardInterrupt()])
def test_sampler_failure_inside_the_cross_frame_patch_leaves_no_patch(output, error):
    clean = frames_of(run_workflow(zero_workflow("clean")))
    model, _clip, _vae = load_model("builtin:tiny-sd15", "float32")  # the cached model the runs use
    before = model_state(model.unet)
    patched = []

    def patch_is_installed():
        patched.append(any(isinstance(p, CrossFrameAttentionProcessor) for p in model.unet.attn_processors.values()))

    expected = RunInterrupted if isinstance(error, KeyboardInterrupt) else NodeExecutionError
    with failing_call(model.unet, error, on_call=2, check=patch_is_installed):
        with pytest.raises(expected, match=r"node 5 \(T2VSampler\)"):
            run_workflow(zero_workflow("failed"))
    assert patched == [True]  # it failed with the patch in place...
    assert model_state(model.unet) == before  # ...and the patch is gone, nothing else changed
    assert not (output / "failed_00001").exists()
    assert frames_of(run_workflow(zero_workflow("after"))) == clean


def test_vae_decode_failure_leaves_the_vae_as_it_was(output):
    clean = frames_of(run_workflow(zero_workflow("clean")))
    _model, _clip, vae = load_model("builtin:tiny-sd15", "float32")
    before = model_state(vae.vae)
    with failing_call(vae.vae.decoder, RuntimeError("decoder exploded")):
        with pytest.raises(NodeExecutionError, match=r"node 6 \(T2VVAEDecode\) failed: RuntimeError: decoder exploded"):
            run_workflow(zero_workflow("failed"))
    assert model_state(vae.vae) == before
    assert frames_of(run_workflow(zero_workflow("after"))) == clean


def test_save_failure_leaves_no_file_and_the_next_save_takes_the_number(output, monkeypatch):
    write_png_frames = video_io._write_png_frames

    def fail_midway(frames, folder, metadata, on_progress):
        write_png_frames(frames[:2], folder, metadata, on_progress)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(video_io, "_write_png_frames", fail_midway)
    with pytest.raises(NodeExecutionError, match=r"node 7 \(T2VSaveVideo\) failed: .*No space left on device"):
        run_workflow(zero_workflow("videos/fox"))
    assert not output.exists() or list(output.rglob("*")) == []
    monkeypatch.setattr(video_io, "_write_png_frames", write_png_frames)
    summary = run_workflow(zero_workflow("videos/fox"))
    assert [Path(file).parent.name for file in summary["outputs"][0]["files"]] == ["fox_00001"] * 3
