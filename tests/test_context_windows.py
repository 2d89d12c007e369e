"""Context windows: the pure window schedules and fusion, then T2VContextWindows on the tiny 3D UNet."""

from __future__ import annotations

import math

import pytest
import torch

from comfyui_text2video.errors import NodeInputError
from comfyui_text2video.nodes.conditioning import T2VTextEncode
from comfyui_text2video.nodes.latent import T2VEmptyLatentVideo
from comfyui_text2video.nodes.long_video import T2VContextWindows
from comfyui_text2video.nodes.sampling import T2VSampler
from comfyui_text2video.nodes.video2video import T2VVideoToVideo
from comfyui_text2video.samplers.context_windows import (FUSE_METHODS, SCHEDULES, ContextOptions, context_windows,
                                                         fuse, windowed)
from comfyui_text2video.samplers.schedulers import SAMPLER_NAMES

# ------------------------------------------------------------------------------------------- pure schedules


def test_static_windows_step_by_length_minus_overlap_and_end_on_the_last_frame():
    windows = context_windows(64, ContextOptions(16, 4, "standard_static"))
    assert [(w[0], w[-1]) for w in windows] == [(0, 15), (12, 27), (24, 39), (36, 51), (48, 63)]
    assert [(w[0], w[-1]) for w in context_windows(20, ContextOptions(16, 4, "standard_static"))] == [(0, 15),
                                                                                                      (4, 19)]


def test_batched_windows_are_disjoint_and_the_last_one_is_short():
    windows = context_windows(40, ContextOptions(16, 4, "batched"))
    assert windows == [list(range(0, 16)), list(range(16, 32)), list(range(32, 40))]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("frames,length,overlap,stride", [(64, 16, 4, 1), (50, 16, 4, 3), (17, 16, 15, 2),
                                                          (33, 8, 0, 2), (96, 24, 8, 1)])
def test_every_schedule_covers_every_frame_with_full_windows_at_every_step(schedule, frames, length, overlap, stride):
    options = ContextOptions(length, overlap, schedule, stride=stride, closed_loop=True)
    for step in range(6):
        windows = context_windows(frames, options, step)
        assert {f for w in windows for f in w} == set(range(frames))
        for window in windows:
            assert len(set(window)) == len(window) and all(0 <= f < frames for f in window)
            assert len(window) == length or (schedule == "batched" and window is windows[-1])
            if schedule != "looped_uniform":
                assert window == sorted(window), "only looped windows may wrap around the end"


def test_uniform_windows_move_from_step_to_step_and_static_ones_do_not():
    uniform = ContextOptions(16, 4, "standard_uniform")
    assert len({str(context_windows(64, uniform, step)) for step in range(4)}) == 4
    static = ContextOptions(16, 4, "standard_static")
    assert len({str(context_windows(64, static, step)) for step in range(4)}) == 1


def test_stride_adds_windows_of_spaced_frames():
    windows = context_windows(64, ContextOptions(16, 4, "standard_uniform", stride=2), step=0)
    assert any(w[1] - w[0] == 2 for w in windows)
    assert all(w[1] - w[0] == 1 for w in context_windows(64, ContextOptions(16, 4, "standard_uniform"), step=0))


def test_a_video_that_fits_one_window_is_one_window():
    for schedule in SCHEDULES:
        assert context_windows(16, ContextOptions(16, 4, schedule, closed_loop=True), 3) == [list(range(16))]


# ------------------------------------------------------------------------------------------- pure fusion


def centred(x):
    """A smooth synthetic predictor whose windows disagree: each window's frames minus the window's mean."""
    def predict_window(window):
        part = x[:, :, window]
        return part - part.mean(dim=2, keepdim=True)

    return predict_window


def frame_signal(values):
    return values.view(1, 1, -1, 1, 1).expand(1, 2, -1, 3, 3).clone()


def largest_step(fused, x):
    """The largest frame-to-frame jump of what the windows added to the input."""
    return float((fused - x)[0, 0, :, 0, 0].diff().abs().max())


@pytest.mark.parametrize("fuse_method", ["pyramid", "overlap-linear"])
def test_fused_predictions_have_no_step_at_window_seams(fuse_method):
    x = frame_signal(torch.sin(torch.arange(64.0) / 9))
    options = ContextOptions(16, 4, "standard_static", fuse_method)
    blended = largest_step(fuse(centred(x), context_windows(64, options), x, options), x)
    hard = ContextOptions(16, 0, "batched", fuse_method)  # no overlap: each seam is a jump
    seams = largest_step(fuse(centred(x), context_windows(64, hard), x, hard), x)
    assert seams > 1.0  # the windows disagree by this much: a cut shows it
    assert blended < 0.25 * seams


def test_fusion_is_a_weighted_average_that_keeps_agreeing_predictions_exact():
    x = frame_signal(torch.randn(40, generator=torch.Generator().manual_seed(0)))
    for fuse_method in FUSE_METHODS:
        options = ContextOptions(12, 5, "standard_uniform", fuse_method, stride=2)
        fused = fuse(lambda window: x[:, :, window] * 3, context_windows(40, options, 5), x, options)
        assert torch.allclose(fused, x * 3, atol=1e-6)


@pytest.mark.parametrize("step", range(4))
def test_closed_loop_joins_the_last_frame_to_the_first(step):
    frames = 64
    x = frame_signal(torch.sin(2 * math.pi * torch.arange(float(frames)) / frames))  # a periodic motion
    looped = ContextOptions(16, 4, "looped_uniform", closed_loop=True)
    windows = context_windows(frames, looped, step)
    assert any((w[i], w[i + 1]) == (frames - 1, 0) for w in windows for i in range(len(w) - 1))
    static = ContextOptions(16, 4, "standard_static")

    def wrap_jump(options):
        fused = fuse(centred(x), context_windows(frames, options, step), x, options) - x
        return float((fused[0, 0, 0, 0, 0] - fused[0, 0, -1, 0, 0]).abs())

    assert wrap_jump(looped) < 0.3 * wrap_jump(static)


def test_per_frame_conditioning_is_cut_to_each_window():
    frames = 20
    per_frame = torch.arange(float(frames))  # one value per video frame
    shared = torch.full((1, 3), 7.0)  # not per frame: every window sees it whole
    seen = []

    def make_predictor(window_frames, conditioning):
        seen.append((window_frames, conditioning["shared"].shape))
        return lambda x, t: conditioning["frames"].view(1, 1, -1, 1, 1).expand_as(x)

    options = ContextOptions(8, 2, "standard_static", "pyramid")
    predict = windowed(make_predictor, ({"frames": per_frame, "shared": shared},), options, torch.tensor([5]), frames)
    out = predict(torch.zeros(1, 4, frames, 2, 2), torch.tensor(5))
    assert torch.equal(out[0, 0, :, 0, 0], per_frame)
    assert seen[0] == (frames, (1, 3)) and all(entry == (8, (1, 3)) for entry in seen[1:])


def test_the_window_schedule_follows_the_position_in_the_whole_schedule():
    calls = []
    options = ContextOptions(8, 2, "standard_uniform")

    def make_predictor(window_frames):
        return lambda x, t: calls.append(x.shape[2]) or torch.zeros_like(x)

    timesteps = torch.tensor([900, 600, 300])
    predict = windowed(make_predictor, (), options, timesteps, 30)
    x = torch.zeros(1, 4, 30, 2, 2)
    for position, t in enumerate(timesteps):
        calls.clear()
        predict(x, t)
        assert len(calls) == len(context_windows(30, options, position))
    with pytest.raises(ValueError, match="not in the run's schedule"):
        predict(x, torch.tensor(123))


# ------------------------------------------------------------------------------------------- on the tiny 3D UNet


def run(model, clip, frames, sampler="ddim", cfg=7.5, batch=1, steps=3, **extra):
    positive = T2VTextEncode().encode(clip, "a long video")[0]
    negative = T2VTextEncode().encode(clip, "")[0]
    latent = T2VEmptyLatentVideo().create(32, 32, frames, batch)[0]
    return T2VSampler().sample(model, positive, negative, latent, 4, steps, cfg, sampler, "normal", 1.0, **extra)[0]


def windows_of(model, length, overlap=2, schedule="standard_static", fuse_method="pyramid", **extra):
    return T2VContextWindows().patch(model, length, overlap, schedule, fuse_method, **extra)[0]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_windows_as_long_as_the_video_give_the_plain_result_bit_for_bit(tiny_t2v, schedule):
    model, clip, _vae = tiny_t2v
    plain = run(model, clip, 6)["samples"]
    for length in (6, 16):
        patched = windows_of(model, length, 3, schedule, closed_loop=True)
        assert torch.equal(run(patched, clip, 6)["samples"], plain)


def test_the_unet_never_sees_more_frames_than_a_window(tiny_t2v):
    model, clip, _vae = tiny_t2v
    seen = []
    hook = model.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[2]))
    try:
        out = run(windows_of(model, 4, 1), clip, 11)["samples"]
    finally:
        hook.remove()
    assert set(seen) == {4} and len(seen) == 3 * 4  # 3 steps x windows 0-3, 3-6, 6-9, 7-10
    assert out.shape[2] == 11 and torch.isfinite(out).all()
    assert not torch.equal(out, run(model, clip, 11)["samples"])  # the windows really changed the run


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_runs_in_windows(tiny_t2v, sampler):
    model, clip, _vae = tiny_t2v
    out = run(windows_of(model, 4, 2, "standard_uniform"), clip, 7, sampler=sampler, steps=2)["samples"]
    assert out.shape == (1, 4, 7, 4, 4) and torch.isfinite(out).all()


def test_a_split_windowed_run_equals_the_unsplit_one(tiny_t2v):
    model, clip, _vae = tiny_t2v
    patched = windows_of(model, 4, 2, "standard_uniform")
    whole = run(patched, clip, 9, sampler="dpmpp_2m", steps=4)["samples"]
    first = run(patched, clip, 9, sampler="dpmpp_2m", steps=4, end_step=2, return_with_leftover_noise=True)
    positive = T2VTextEncode().encode(clip, "a long video")[0]
    negative = T2VTextEncode().encode(clip, "")[0]
    second = T2VSampler().sample(patched, positive, negative, first, 4, 4, 7.5, "dpmpp_2m", "normal", 1.0,
                                 start_step=2, add_noise=False)[0]["samples"]
    assert torch.equal(second, whole)


def test_batches_and_cfg_below_one_run_in_windows(tiny_t2v):
    model, clip, _vae = tiny_t2v
    patched = windows_of(model, 4, 2)
    batch = run(patched, clip, 8, batch=2, cfg=1.0)["samples"]
    single = run(patched, clip, 8, cfg=1.0)["samples"]
    assert batch.shape == (2, 4, 8, 4, 4) and torch.isfinite(batch).all()
    assert not torch.equal(single, run(model, clip, 8, cfg=1.0)["samples"])


def test_video_to_video_runs_in_windows(tiny_t2v):
    model, clip, vae = tiny_t2v
    images = torch.rand(10, 32, 32, 3, generator=torch.Generator().manual_seed(3))
    positive = T2VTextEncode().encode(clip, "a long video")[0]
    negative = T2VTextEncode().encode(clip, "")[0]

    def refine(handle):
        return T2VVideoToVideo().refine(handle, positive, negative, vae, images, 2, 4, 7.5, "ddim", "normal",
                                        0.5)[0]["samples"]

    plain = refine(model)
    assert torch.equal(refine(windows_of(model, 10)), plain)
    windowed_out = refine(windows_of(model, 4, 2))
    assert windowed_out.shape == plain.shape and not torch.equal(windowed_out, plain)


def test_the_patch_leaves_the_input_model_alone(tiny_t2v):
    model, _clip, _vae = tiny_t2v
    patched = windows_of(model, 8)
    assert model.context_windows is None and patched.context_windows.length == 8
    assert patched.unet is model.unet


@pytest.mark.parametrize("inputs,name", [((16, 16), "context_overlap"), ((8, 9), "context_overlap")])
def test_bad_windows_are_refused_naming_the_input(tiny_t2v, inputs, name):
    with pytest.raises(NodeInputError, match=f"T2VContextWindows: input '{name}'"):
        T2VContextWindows().patch(tiny_t2v[0], *inputs, "standard_static", "pyramid")


def test_image_models_are_refused(tiny_sd):
    with pytest.raises(NodeInputError, match="T2VContextWindows: input 'model'.*chunk_size"):
        T2VContextWindows().patch(tiny_sd[0], 8, 2, "standard_static", "pyramid")
