"""Workflow files for the runner: the editor's or the API JSON, or the workflow a saved video or png carries.

T2VSaveVideo (like ComfyUI's own save nodes) embeds the editor's workflow and the API prompt in mp4,
webm, webp and png files, so `run clip.mp4` renders that file's workflow again. gif has no place for
it, and of a png frame sequence only the first frame carries it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..media import video_io
from .workflow import WorkflowError

EMBEDDED_KEYS = ("workflow", "prompt")
"""The embedded entries, in order of preference: the editor's workflow, then the API prompt."""


def read_workflow_file(path: str | Path) -> Any:
    """The workflow in `path`: a JSON file, a video/png with an embedded workflow, or a png sequence folder."""
    path = Path(path)
    if path.is_dir():
        path = _first_frame(path)
    try:
        kind = video_io.media_kind(path)
        if kind is None:
            return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise WorkflowError(f"cannot read workflow {path}: it is neither JSON nor a video or png with an "
                            "embedded workflow (mp4, webm, webp, png)") from None
    except RecursionError:
        raise WorkflowError(f"cannot read workflow {path}: its JSON nests too deeply to be a workflow") from None
    except ValueError as exc:
        raise WorkflowError(f"cannot read workflow {path}: not valid JSON: {exc}") from None
    except OSError as exc:
        raise WorkflowError(f"cannot read workflow {path}: {exc}") from None
    return embedded_workflow(path, kind)


def embedded_workflow(path: Path, kind: str) -> Any:
    """The workflow embedded in a media file of `kind` (see `video_io.media_kind`)."""
    if kind == "gif":
        raise WorkflowError(f"{path.name} is a gif, and gif files carry no workflow: save as mp4, webm, webp or "
                            "png to keep the workflow in the file")
    try:
        metadata = video_io.read_metadata(path)
    except video_io.VideoIOError as exc:
        raise WorkflowError(f"cannot read workflow {path}: {exc.problem}") from None
    for key in EMBEDDED_KEYS:
        try:
            data = json.loads(metadata.get(key) or "null")
        except RecursionError:
            raise WorkflowError(f"cannot read workflow {path}: its embedded {key} nests too deeply") from None
        except ValueError as exc:
            raise WorkflowError(f"cannot read workflow {path}: its embedded {key} is not valid JSON: {exc}") from None
        if data:
            return data
    hint = f" (of a png sequence only the first frame, {video_io.FRAME_NAME.format(0)}, carries it)" \
        if kind == "png" else ""
    raise WorkflowError(f"{path.name} carries no workflow{hint}: only files saved with the workflow embedded "
                        "(by T2VSaveVideo or ComfyUI's save nodes, without --disable-metadata) can be run")


def _first_frame(folder: Path) -> Path:
    frames = sorted(folder.glob("*.png"), key=lambda frame: video_io.natural_key(frame.name))
    if not frames:
        raise WorkflowError(f"cannot read workflow {folder}: the folder holds no png frames")
    return frames[0]
