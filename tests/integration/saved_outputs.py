"""Checking what a run wrote: the files a save node reported, and the frames inside them."""

from __future__ import annotations

from pathlib import Path

import av


def written_files(comfy, run, node_id: str = "7") -> list[Path]:
    """The files a save node reported in `/history`, checked to exist (non-empty) in the output folder."""
    entries = run.outputs[node_id]["images"]
    paths = [comfy.output_dir / entry["subfolder"] / entry["filename"] for entry in entries]
    for entry, path in zip(entries, paths):
        assert entry["type"] == "output"
        assert path.is_file() and path.stat().st_size > 0, path
    return paths


def frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _frame in container.decode(video=0))


def video_shape(path: Path) -> tuple[int, int, int]:
    """(frames, width, height) of a saved video."""
    with av.open(str(path)) as container:
        sizes = [(frame.width, frame.height) for frame in container.decode(video=0)]
    return len(sizes), *sizes[0]


def decoded_frames(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24").tobytes() for frame in container.decode(video=0)]
