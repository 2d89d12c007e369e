"""Context windows: every model call runs on overlapping windows of frames whose predictions are fused.

Names and meanings follow AnimateDiff-Evolved and core ComfyUI (`comfy/context_windows.py`): windows of
`length` frames, neighbours sharing `overlap` frames; `standard_static` always uses the same windows,
the uniform schedules shift theirs from step to step (by the ordered-halving sequence of the step index) so
seams never stay in one place, `looped_uniform` wraps around the end of the video, `batched` cuts it into
disjoint pieces. Overlapping predictions are averaged with per-frame weights (`pyramid`, `flat`,
`overlap-linear`). A video no longer than one window runs as a single plain call.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import torch

from .loop import NoisePredictor

SCHEDULES = ("standard_static", "standard_uniform", "looped_uniform", "batched")
FUSE_METHODS = ("pyramid", "flat", "overlap-linear")
FRAME_DIM = 2  # latents are [B, C, F, h, w]

Window = list[int]


@dataclasses.dataclass(frozen=True)
class ContextOptions:
    """How to cut a video into windows and fuse them (T2VContextWindows' inputs)."""

    length: int = 16
    overlap: int = 4
    schedule: str = "standard_static"
    fuse_method: str = "pyramid"
    stride: int = 1  # uniform schedules: also windows of every 2nd, 4th, ... frame, up to 2**(stride-1)
    closed_loop: bool = False  # looped_uniform: windows also join the last frames to the first ones

    def problem(self) -> tuple[str, str] | None:
        """`(input name, reason)` if these options cannot work, else None."""
        if self.length < 1:
            return "context_length", f"{self.length} is below 1"
        if not 0 <= self.overlap < self.length:
            return "context_overlap", (f"{self.overlap} must be at least 0 and below context_length "
                                       f"{self.length} (neighbouring windows would not advance)")
        if self.schedule not in SCHEDULES:
            return "context_schedule", f"'{self.schedule}' is not one of {', '.join(SCHEDULES)}"
        if self.fuse_method not in FUSE_METHODS:
            return "fuse_method", f"'{self.fuse_method}' is not one of {', '.join(FUSE_METHODS)}"
        if self.stride < 1:
            return "context_stride", f"{self.stride} is below 1"
        return None


def ordered_halving(step: int) -> float:
    """The bits of `step` mirrored behind the binary point: 0, 1/2, 1/4, 3/4, 1/8, ... (a 64-bit van der Corput
    sequence), so consecutive steps spread their window offsets evenly."""
    return int(f"{step:064b}"[::-1], 2) / 2**64


def _static(frames: int, options: ContextOptions) -> list[Window]:
    """Windows every `length - overlap` frames; the last one moved back to end at the last frame."""
    advance = options.length - options.overlap
    starts = range(0, frames - options.length + advance, advance)
    return [list(range(min(start, frames - options.length), min(start, frames - options.length) + options.length))
            for start in starts]


def _batched(frames: int, options: ContextOptions) -> list[Window]:
    return [list(range(start, min(start + options.length, frames))) for start in range(0, frames, options.length)]


def _spacings(frames: int, options: ContextOptions) -> list[int]:
    """Frame spacings of the uniform schedules: 1, 2, 4, ... up to `stride` levels, while a window fits the video."""
    levels = min(options.stride, int(math.floor(math.log2(frames / options.length))) + 1)
    return [1 << level for level in range(levels)]


def _wrapped(frames: int, options: ContextOptions, step: int, loop_end: bool) -> list[Window]:
    """Uniform windows that wrap around the end; their offset rotates with `step`.

    `loop_end`: the windows run on past the last frame into the first ones (a closed loop).
    """
    phase = ordered_halving(step)
    shift = round(frames * phase)
    windows = []
    for spacing in _spacings(frames, options):
        span = options.length * spacing
        stop = frames + shift - (0 if loop_end else options.overlap)
        for start in range(int(phase * spacing) + shift, stop, span - options.overlap):
            windows.append([frame % frames for frame in range(start, start + span, spacing)])
    return windows


def _unwrapped(window: Window, frames: int) -> Window:
    """A window that runs past the last frame, moved back so that it ends on the last frame (same spacing)."""
    offsets = [(frame - window[0]) % frames for frame in window]
    end = frames - 1 - offsets[-1]
    return [end + offset for offset in offsets]


def _standard_uniform(frames: int, options: ContextOptions, step: int) -> list[Window]:
    """Uniform windows that never wrap: one that would is moved to end on the last frame, frames left
    uncovered by that get a window starting at them, and repeated windows are dropped."""
    windows = []
    for window in _wrapped(frames, options, step, loop_end=False):
        if window != sorted(window):
            window = _unwrapped(window, frames)
        windows.append(window)
    covered = {frame for window in windows for frame in window}
    for frame in range(frames):
        if frame not in covered:
            start = min(frame, frames - options.length)
            windows.append(list(range(start, start + options.length)))
            covered.update(windows[-1])
    unique = []
    for window in windows:
        if window not in unique:
            unique.append(window)
    return unique


def context_windows(frames: int, options: ContextOptions, step: int = 0) -> list[Window]:
    """The windows (lists of frame indices) of model call `step` on a video of `frames` frames."""
    if frames <= options.length:
        return [list(range(frames))]
    if options.schedule == "standard_static":
        return _static(frames, options)
    if options.schedule == "batched":
        return _batched(frames, options)
    if options.schedule == "looped_uniform":
        return _wrapped(frames, options, step, loop_end=options.closed_loop)
    return _standard_uniform(frames, options, step)


def fuse_weights(window: Window, frames: int, options: ContextOptions) -> torch.Tensor:
    """Per-frame weights of one window's prediction.

    `pyramid`: 1, 2, ... up to the middle and down again (frames near a window's edge count least);
    `flat`: 1 everywhere; `overlap-linear`: 1, except a linear cross-fade over the `overlap` frames at each
    edge that borders another window (not at the video's first or last frame); the fade of two neighbours
    sums to 1 on every shared frame.
    """
    size = len(window)
    if options.fuse_method == "pyramid":
        return torch.tensor([float(min(i + 1, size - i)) for i in range(size)])
    weights = torch.ones(size)
    fade = min(options.overlap, size)
    if options.fuse_method == "flat" or fade == 0:
        return weights
    ramp = torch.arange(1, fade + 1, dtype=torch.float32) / (fade + 1)
    if min(window) > 0:
        weights[:fade] = ramp
    if max(window) < frames - 1:
        weights[size - fade:] = torch.minimum(weights[size - fade:], ramp.flip(0))
    return weights


def select_frames(value, window: Window, frames: int):
    """`value` (conditioning: nested lists, tuples, dicts, tensors) with every tensor whose first dimension
    counts the video's frames cut to the window's frames (as core ComfyUI does); everything else as it is."""
    if isinstance(value, torch.Tensor):
        if value.ndim > 0 and value.shape[0] == frames:
            return value[torch.tensor(window, device=value.device)]
        return value
    if isinstance(value, dict):
        return {key: select_frames(item, window, frames) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(select_frames(item, window, frames) for item in value)
    return value


def fuse(predict_window: Callable[[Window], torch.Tensor], windows: Sequence[Window], x: torch.Tensor,
         options: ContextOptions) -> torch.Tensor:
    """The weighted average of `predict_window(window)` (predictions `[B, C, len(window), h, w]`) over the
    frames of `x`; only one window's prediction exists at a time besides the running sums."""
    frames = x.shape[FRAME_DIM]
    total = torch.zeros_like(x, dtype=torch.float32)
    weight_sum = torch.zeros(frames, device=x.device)
    for window in windows:
        index = torch.tensor(window, device=x.device)
        weights = fuse_weights(window, frames, options).to(x.device)
        out = predict_window(window)
        total.index_add_(FRAME_DIM, index, out.float() * weights.view(1, 1, -1, 1, 1))
        weight_sum.index_add_(0, index, weights)
        del out
    return total / weight_sum.view(1, 1, -1, 1, 1)


def step_index(t: torch.Tensor, timesteps: torch.Tensor) -> int:
    """The position of timestep `t` in the run's schedule (its first occurrence), as core ComfyUI finds it."""
    matches = torch.nonzero(torch.isclose(timesteps.float().cpu(), torch.as_tensor(t).float().cpu(), rtol=1e-4))
    if not len(matches):
        raise ValueError(f"timestep {float(t)} is not in the run's schedule")
    return int(matches[0])


def windowed(make_predictor: Callable[..., NoisePredictor], conditioning: Sequence, options: ContextOptions,
             timesteps: torch.Tensor, frames: int) -> NoisePredictor:
    """`(x, t) -> noise` for latents of `frames` frames that runs `make_predictor(window_frames, *conditioning)`
    on each window of `x`'s frames and fuses the predictions.

    Per window the conditioning is cut to the window's frames (`select_frames`); the window schedule of a call
    follows the position of `t` in `timesteps` (the run's whole schedule, so split runs see the windows of the
    unsplit run). A video that fits one window gets exactly the plain predictor's result.
    """
    plain = make_predictor(frames, *conditioning)

    def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        windows = context_windows(frames, options, step_index(t, timesteps))
        if len(windows) == 1 and len(windows[0]) == frames:
            return plain(x, t)

        def predict_window(window: Window) -> torch.Tensor:
            inner = make_predictor(len(window), *(select_frames(c, window, frames) for c in conditioning))
            return inner(x[:, :, window], t)

        return fuse(predict_window, windows, x, options)

    return predict
