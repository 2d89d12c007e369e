"""Video files in and out: streaming frame reading, encoding, and safe output paths.

Pure I/O on PyAV and Pillow (no ComfyUI, no node classes). Frames are `[N, H, W, 3]`
tensors: uint8 when read, float 0..1 (ComfyUI's IMAGE) when written.

- Reading decodes one frame at a time and keeps only the selected frames, so memory
  grows with what is kept, not with the file; decoding stops at the last frame needed.
  Video containers go through PyAV; GIF and WebP through Pillow (FFmpeg cannot decode
  animated WebP); a folder of numbered PNG/JPEG images is read in natural order.
- Writing never overwrites: `reserve_output_path` claims the next free counter name
  exclusively, the encoder writes to a hidden temporary name beside it, and
  `atomic_output` moves the finished result into place, or removes every trace of it
  when anything (KeyboardInterrupt included) goes wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import av
import numpy as np
import torch
from PIL import Image, PngImagePlugin

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".gif", ".webp")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
PILLOW_EXTENSIONS = (".gif", ".webp")
SAVE_FORMATS = ("mp4", "webm", "gif", "webp", "png")
METADATA_FORMATS = ("mp4", "webm", "webp", "png")
"""Formats that carry the workflow (GIF has no place the editor reads it from)."""

DEFAULT_FPS = 8.0
"""Frame rate of sources that have none (image folders, single images)."""

MIN_SIZE = 8
FRAME_NAME = "frame_{:05d}.png"
COUNTER_DIGITS = 5
NAME_MAX = 255
"""Longest file or folder name, in bytes, on the usual file systems (ext4, btrfs, APFS; NTFS counts 255 characters)."""
PATH_MAX = 4096
"""Longest path, in bytes, that Linux accepts."""
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

MAX_ANIMATED_IMAGE_PIXELS = 400_000_000
"""Pixels an animated GIF/WebP may make Pillow decode (every frame whole, at full size, before resizing):
about 1500 frames of 512x512; past it a load would take minutes."""

log = logging.getLogger(__name__)

_DECODE_ERRORS = (av.FFmpegError, OSError, SyntaxError, EOFError, Image.DecompressionBombError)
_EXIF_PROMPT_TAG = 0x0110  # "Model"; further entries count down from "Make" (0x010F)
_EXIF_FIRST_EXTRA_TAG = 0x010F


class VideoIOError(ValueError):
    """A bad argument or file; `argument` names the parameter to fix, `problem` says how."""

    def __init__(self, argument: str, problem: str):
        self.argument = argument
        self.problem = problem
        super().__init__(f"{argument}: {problem}")


class LoadedVideo(NamedTuple):
    frames: torch.Tensor
    """uint8 `[N, H, W, 3]` on the CPU."""
    fps: float
    """Frame rate of the selected frames (the source's divided by `select_every_nth`)."""


class SavedVideo(NamedTuple):
    path: Path
    subfolder: str
    """Folder of `filenames`, relative to the output folder, with `/` separators ("" = the folder itself)."""
    filenames: list[str]


# --------------------------------------------------------------------------- input files


def natural_key(name: str) -> list:
    """Sort key that orders `frame2` before `frame10`."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _image_files(folder: Path) -> list[Path]:
    files = [entry for entry in folder.iterdir()
             if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS and not entry.name.startswith(".")]
    return sorted(files, key=lambda entry: natural_key(entry.name))


def list_input_videos(input_dir: str | Path) -> list[str]:
    """Video files and folders of images under `input_dir` (recursively), as relative `/` paths."""
    root = Path(input_dir)
    if not root.is_dir():
        return []
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative = Path(folder).relative_to(root)
        found += [(relative / name).as_posix() for name in files
                  if name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith(".")]
        if relative != Path(".") and any(name.lower().endswith(IMAGE_EXTENSIONS) for name in files):
            found.append(relative.as_posix())
    return sorted(found, key=natural_key)


def resolve_input_video(input_dir: str | Path, name: str) -> Path:
    """The file or image folder `name` inside `input_dir`; refuses anything that resolves outside it."""
    if not name:
        raise VideoIOError("path", "no video chosen: put a video in the input folder or upload one")
    root = os.path.realpath(input_dir)
    candidate = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, candidate]) != root:
        raise VideoIOError("path", f"'{name}' is outside the input folder; choose a file inside {root}")
    path = Path(candidate)
    if path.is_dir():
        if not _image_files(path):
            raise VideoIOError("path", f"the folder '{name}' holds no {'/'.join(IMAGE_EXTENSIONS)} images")
        return path
    if not path.is_file():
        raise VideoIOError("path", f"'{name}' was not found in the input folder {root}; check the name or "
                                   "upload the file again")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise VideoIOError("path", f"'{name}' is not a supported video; use one of {', '.join(VIDEO_EXTENSIONS)} "
                                   "or a folder of images")
    return path


def content_fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes, or of the names, sizes and times of a folder's images."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for image in _image_files(path):
            stat = image.stat()
            digest.update(f"{image.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    else:
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- reading


def output_size(source: tuple[int, int], width: int = 0, height: int = 0) -> tuple[int, int]:
    """`(width, height)` of the loaded frames: 0 keeps the source's; one side alone keeps the aspect."""
    source_width, source_height = source
    if width and height:
        return width, height
    if width:
        return width, max(1, round(source_height * width / source_width))
    if height:
        return max(1, round(source_width * height / source_height)), height
    return source


def _pillow_rgb(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    rgb = image.convert("RGB")
    if rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(rgb)


class _AvFrame:
    def __init__(self, frame: av.VideoFrame):
        self.frame = frame
        self.size = (frame.width, frame.height)

    def rgb(self, size: tuple[int, int]) -> np.ndarray:
        resize = {} if size == self.size else {"width": size[0], "height": size[1], "interpolation": "LANCZOS"}
        return self.frame.to_ndarray(format="rgb24", **resize)


class _PillowFrame:
    """The current frame of an animated image; valid until the next frame is decoded."""

    def __init__(self, image: Image.Image):
        self.image = image
        self.size = image.size

    def rgb(self, size: tuple[int, int]) -> np.ndarray:
        return _pillow_rgb(self.image, size)


class _ImageFileFrame:
    """One image of a folder, opened only if it is selected."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def size(self) -> tuple[int, int]:
        with Image.open(self.path) as image:
            return image.size

    def rgb(self, size: tuple[int, int]) -> np.ndarray:
        with Image.open(self.path) as image:
            return _pillow_rgb(image, size)


class _AvSource:
    def __init__(self, container):
        if not container.streams.video:
            raise VideoIOError("path", f"'{Path(container.name).name}' has no video stream (audio only?)")
        self.container = container
        self.stream = container.streams.video[0]
        self.stream.thread_type = "AUTO"
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else DEFAULT_FPS

    def frames(self) -> Iterator[_AvFrame]:
        return (_AvFrame(frame) for frame in self.container.decode(self.stream))

    def truncation(self, decoded: int) -> str | None:
        """Why the stream seems cut off after `decoded` frames, if its container promised more."""
        declared = self.stream.frames
        if declared:
            return f"it declares {declared} frames but only {decoded} could be decoded" if decoded < declared else None
        seconds = self.container.duration / av.time_base if self.container.duration else 0
        if decoded < seconds * self.fps * 0.9 - 1:
            return f"it lasts {seconds:.2f} s but its frames end after {decoded / self.fps:.2f} s"
        return None


class _AnimatedImageSource:
    """GIF or WebP through Pillow; the frame rate is the mean over the frames decoded so far."""

    def __init__(self, image: Image.Image):
        self.image = image
        self._decoded = 0
        self._milliseconds = 0

    def check_decoding_cost(self, frames_needed: int | None) -> None:
        """Refuse to decode more than MAX_ANIMATED_IMAGE_PIXELS (`frames_needed` None: all frames)."""
        total = getattr(self.image, "n_frames", 1)
        frames = total if frames_needed is None else min(total, frames_needed)
        width, height = self.image.size
        if frames * width * height > MAX_ANIMATED_IMAGE_PIXELS:
            name = Path(self.image.filename).name
            raise VideoIOError("path", f"'{name}' has {total} frames of {width}x{height}; decoding {frames} of them "
                                       f"whole takes {frames * width * height / 1e6:.0f} megapixels, more than the "
                                       f"{MAX_ANIMATED_IMAGE_PIXELS / 1e6:.0f} allowed for GIF/WebP. Convert it to a "
                                       "video (mp4) or scale it down first, or load fewer frames (frame_limit)")

    def frames(self) -> Iterator[_PillowFrame]:
        for index in range(getattr(self.image, "n_frames", 1)):
            self.image.seek(index)
            self.image.load()
            self._decoded += 1
            self._milliseconds += self.image.info.get("duration") or 0
            yield _PillowFrame(self.image)

    @property
    def fps(self) -> float:
        return 1000.0 * self._decoded / self._milliseconds if self._milliseconds else DEFAULT_FPS


class _ImageFolderSource:
    fps = DEFAULT_FPS

    def __init__(self, folder: Path):
        self.folder = folder

    def frames(self) -> Iterator[_ImageFileFrame]:
        return (_ImageFileFrame(path) for path in _image_files(self.folder))


@contextlib.contextmanager
def _open_source(path: Path):
    if path.is_dir():
        yield _ImageFolderSource(path)
    elif path.suffix.lower() in PILLOW_EXTENSIONS:
        with Image.open(path) as image:
            yield _AnimatedImageSource(image)
    else:
        with av.open(str(path)) as container:
            yield _AvSource(container)


def _check_selection(skip_first: int, select_every_nth: int, frame_limit: int, width: int, height: int) -> None:
    for argument, value, minimum in (("skip_first", skip_first, 0), ("select_every_nth", select_every_nth, 1),
                                     ("frame_limit", frame_limit, 0)):
        if value < minimum:
            raise VideoIOError(argument, f"must be at least {minimum}, got {value}")
    for argument, value in (("width", width), ("height", height)):
        if value and value < MIN_SIZE:
            raise VideoIOError(argument, f"must be 0 (keep the source size) or at least {MIN_SIZE}, got {value}")


def read_frames(path: str | Path, skip_first: int = 0, select_every_nth: int = 1, frame_limit: int = 0,
                width: int = 0, height: int = 0,
                on_frame: Callable[[int], None] | None = None) -> LoadedVideo:
    """Decode `path` frame by frame and keep the selection, resized to `width` x `height`.

    The selection skips `skip_first` frames, then keeps every `select_every_nth`, then stops
    after `frame_limit` kept frames (0 = no limit), as VideoHelperSuite's loader does; decoding
    stops there too. `on_frame(kept_so_far)` runs after each kept frame (raise in it to stop).
    """
    _check_selection(skip_first, select_every_nth, frame_limit, width, height)
    path = Path(path)
    if not path.exists():
        raise VideoIOError("path", f"'{path}' does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoIOError("path", f"'{path.name}' is an empty file (0 bytes); copy or upload it again")
    kept: list[np.ndarray] = []
    size = None
    decoded = 0
    try:
        with _open_source(path) as source:
            if isinstance(source, _AnimatedImageSource):
                source.check_decoding_cost(skip_first + (frame_limit - 1) * select_every_nth + 1 if frame_limit else None)
            for index, frame in enumerate(source.frames()):
                decoded = index + 1
                if index < skip_first or (index - skip_first) % select_every_nth:
                    continue
                size = size or output_size(frame.size, width, height)
                kept.append(frame.rgb(size))
                if on_frame is not None:
                    on_frame(len(kept))
                if len(kept) == frame_limit:
                    break
            else:
                cut_off = isinstance(source, _AvSource) and source.truncation(decoded)
                if cut_off:
                    log.warning("'%s' seems cut off (%s); loading the frames before the cut", path.name, cut_off)
            fps = source.fps / select_every_nth
    except _DECODE_ERRORS as error:
        raise VideoIOError("path", f"'{path.name}' cannot be decoded (corrupt or unsupported file): {error}") from error
    if not kept:
        if decoded == 0:
            raise VideoIOError("path", f"'{path.name}' contains no frames")
        raise VideoIOError("skip_first", f"skipping {skip_first} frames leaves none of the {decoded} frames of "
                                         f"'{path.name}'; use a value below {decoded}")
    return LoadedVideo(torch.from_numpy(np.stack(kept)), fps)


class VideoInfo(NamedTuple):
    """What a video source holds, read without decoding its frames."""

    frames: int
    fps: float
    width: int
    height: int
    first_image: Path | None
    """The first image of an image folder (None for files)."""


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, frame rate and size of a video file, animated image or image folder.

    Video containers are demuxed, not decoded, when their header lacks the frame count.
    """
    path = Path(path)
    try:
        if path.is_dir():
            images = _image_files(path)
            with Image.open(images[0]) as image:
                return VideoInfo(len(images), DEFAULT_FPS, *image.size, images[0])
        if path.suffix.lower() in PILLOW_EXTENSIONS:
            with Image.open(path) as image:
                source = _AnimatedImageSource(image)
                count = sum(1 for _frame in source.frames())
                return VideoInfo(count, source.fps, *image.size, None)
        with av.open(str(path)) as container:
            source = _AvSource(container)
            count = source.stream.frames or sum(1 for packet in container.demux(source.stream) if packet.size)
            return VideoInfo(count, source.fps, source.stream.width, source.stream.height, None)
    except _DECODE_ERRORS as error:
        raise VideoIOError("path", f"'{path.name}' cannot be read (corrupt or unsupported file): {error}") from error


# --------------------------------------------------------------------------- embedded metadata


def media_kind(path: str | Path) -> str | None:
    """What a file is by its first bytes: png, webp, gif, matroska (webm/mkv), mp4 (mp4/mov), else None."""
    with open(path, "rb") as file:
        head = file.read(12)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"GIF8"):
        return "gif"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head[4:8] == b"ftyp":
        return "mp4"
    return None


def read_metadata(path: str | Path) -> dict[str, str]:
    """The text entries embedded in a png, webp, mp4/mov or webm/mkv file (keys lower-cased), as
    `write_video` writes them and ComfyUI's editor reads them; {} for other files (gif)."""
    path = Path(path)
    kind = media_kind(path)
    try:
        if kind == "png":
            with Image.open(path) as image:
                return {key.lower(): value for key, value in getattr(image, "text", {}).items()}
        if kind == "webp":
            with Image.open(path) as image:
                entries = [value.partition(":") for value in image.getexif().values() if isinstance(value, str)]
            return {key.lower(): value for key, colon, value in entries if colon}
        if kind in ("mp4", "matroska"):
            with av.open(str(path)) as container:
                return {key.lower(): value for key, value in container.metadata.items()}
    except _DECODE_ERRORS as error:
        raise VideoIOError("path", f"'{path.name}' cannot be read (corrupt or unsupported file): {error}") from error
    return {}


# --------------------------------------------------------------------------- output paths


def split_prefix(filename_prefix: str) -> tuple[list[str], str]:
    """`(subfolders, base name)` of a prefix such as `Text2Video/video`; refuses escapes."""
    if not filename_prefix.strip():
        raise VideoIOError("filename_prefix", "is empty; give a name such as 'Text2Video/video'")
    if re.match(r"^([\\/]|[A-Za-z]:)", filename_prefix):
        raise VideoIOError("filename_prefix", f"'{filename_prefix}' is an absolute path; give a path relative to "
                                              "the output folder")
    parts = [part for part in re.split(r"[\\/]+", filename_prefix) if part not in ("", ".")]
    if ".." in parts:
        raise VideoIOError("filename_prefix", f"'{filename_prefix}' leads out of the output folder ('..'); "
                                              "remove the '..'")
    if re.search(r"[\\/]\s*$", filename_prefix) or not parts:
        raise VideoIOError("filename_prefix", f"'{filename_prefix}' ends with a folder; add a file name")
    return parts[:-1], parts[-1]


def _shown(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _name_bytes(name: str) -> int:
    try:
        return len(os.fsencode(name))
    except UnicodeEncodeError:
        raise VideoIOError("filename_prefix", f"{_shown(name)} holds characters that cannot be part of a file "
                                              "name; remove them") from None


def _temporary_name(name: str) -> str:
    """The hidden name a file is written under before it is moved to `name`."""
    return f".{name}.{secrets.token_hex(4)}.partial"


def _inside(root: str, path: str) -> bool:
    try:
        return os.path.commonpath([root, path]) == root
    except ValueError:  # another drive
        return False


def check_output_prefix(output_dir: str | Path, filename_prefix: str) -> tuple[Path, str]:
    """`(folder, base name)` that `filename_prefix` saves to, checked before anything is written.

    Refuses what could not be saved there: a way out of `output_dir` (also through a linked
    subfolder), control characters (a NUL byte), a name or path too long for the file system
    (counting the number, the extension and the hidden temporary name used while writing),
    a file where a subfolder should be. The folder may not exist yet.
    """
    if _CONTROL_CHARACTERS.search(filename_prefix):
        raise VideoIOError("filename_prefix", f"{_shown(filename_prefix)} contains control characters (a NUL byte, "
                                              "a line break, ...); remove them")
    subfolders, base = split_prefix(filename_prefix)
    for part in subfolders:
        if _name_bytes(part) > NAME_MAX:
            raise VideoIOError("filename_prefix", f"the folder name {_shown(part)} is {_name_bytes(part)} bytes "
                                                  f"long; names may have at most {NAME_MAX}: shorten it")
    longest_extension = max((f".{extension}" for extension in SAVE_FORMATS), key=len)
    longest = _temporary_name(f"{base}_{0:0{COUNTER_DIGITS}d}{longest_extension}")
    room = NAME_MAX - (_name_bytes(longest) - _name_bytes(base))
    if _name_bytes(base) > room:
        raise VideoIOError("filename_prefix", f"the file name {_shown(base)} is {_name_bytes(base)} bytes long; at "
                                              f"most {room} fit (names may have {NAME_MAX} bytes, and the number, "
                                              "the extension and the temporary name used while saving need the "
                                              "rest): shorten it")
    root = os.path.realpath(output_dir)
    folder = os.path.realpath(os.path.join(root, *subfolders))
    if not _inside(root, folder):
        raise VideoIOError("filename_prefix", f"{_shown(filename_prefix)} leads out of the output folder {root} "
                                              "(through a linked folder); choose a folder inside it")
    length = _name_bytes(os.path.join(folder, longest))
    if length >= PATH_MAX:
        raise VideoIOError("filename_prefix", f"the saved file's path would be {length} bytes long; paths may "
                                              f"have at most {PATH_MAX - 1}: use a shorter prefix")
    current = Path(root)
    for part in subfolders:
        current = current / part
        if current.exists() and not current.is_dir():
            raise VideoIOError("filename_prefix", f"'{current.relative_to(root).as_posix()}' is a file in the "
                                                  "output folder, not a folder; choose another prefix")
    return Path(folder), base


def reserve_output_path(output_dir: str | Path, filename_prefix: str, extension: str) -> Path:
    """Claim `<prefix>_<counter><extension>` in `output_dir` with the next free counter (00001, ...).

    Subfolders in the prefix are created; nothing outside `output_dir` is ever touched. The
    name is claimed exclusively with an empty placeholder (a folder when `extension` is ""),
    so concurrent saves never get the same name and nothing is overwritten.
    """
    folder, base = check_output_prefix(output_dir, filename_prefix)
    folder.mkdir(parents=True, exist_ok=True)
    numbered = re.compile(re.escape(base) + r"_(\d+)(\..*)?")
    taken = [int(match.group(1)) for entry in os.listdir(folder) if (match := numbered.fullmatch(entry))]
    counter = max(taken, default=0) + 1
    while True:
        path = folder / f"{base}_{counter:0{COUNTER_DIGITS}d}{extension}"
        try:
            if extension:
                path.touch(exist_ok=False)
            else:
                path.mkdir()
            return path
        except FileExistsError:
            counter += 1


def _remove(path: Path) -> None:
    """Remove a file or folder if it is there; never raises (it runs while another error is on its way)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


@contextlib.contextmanager
def _folders_removed_on_failure(folder: Path) -> Iterator[None]:
    """On any exception, remove the folders up to `folder` that did not exist before and are still empty."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    try:
        yield
    except BaseException:
        for created in missing:  # deepest first
            try:
                created.rmdir()
            except OSError:  # not empty (another save uses it) or already gone
                break
        raise


@contextlib.contextmanager
def atomic_output(reserved: Path) -> Iterator[Path]:
    """Yield a hidden temporary path beside `reserved` to write; move it into place on success.

    On any exception (KeyboardInterrupt included) the temporary and the reservation are
    removed, so no partial output remains. A reserved folder yields a temporary folder.
    """
    temporary = reserved.with_name(_temporary_name(reserved.name))
    try:
        if reserved.is_dir():
            temporary.mkdir()
            yield temporary
            reserved.rmdir()
            temporary.rename(reserved)
        else:
            temporary.touch(exist_ok=False)
            yield temporary
            os.replace(temporary, reserved)
    except BaseException:
        _remove(temporary)
        _remove(reserved)
        raise


def _is_empty(entry: Path) -> bool:
    if entry.is_symlink():
        return False
    return not any(entry.iterdir()) if entry.is_dir() else entry.stat().st_size == 0


def remove_interrupted_saves(output_dir: str | Path, filename_prefix: str) -> list[Path]:
    """Remove what saves under `filename_prefix` left when their process was killed outright (SIGKILL, power
    loss): hidden `.partial` temporaries and empty placeholders. Finished outputs are never touched.

    Only for a prefix that no running save uses (a batch job's own prefix); returns what was removed.
    """
    subfolders, base = split_prefix(filename_prefix)
    folder = Path(output_dir).joinpath(*subfolders)
    if not folder.is_dir():
        return []
    name = re.escape(base) + r"_\d+(\.[^.]*)?"
    placeholder, temporary = re.compile(name), re.compile(rf"\.{name}\.[0-9a-f]+\.partial")
    removed = []
    for entry in sorted(folder.iterdir()):
        if temporary.fullmatch(entry.name) or (placeholder.fullmatch(entry.name) and _is_empty(entry)):
            _remove(entry)
            removed.append(entry)
    return removed


# --------------------------------------------------------------------------- writing


def _frames_problem(frames) -> str | None:
    """Why `frames` cannot be saved, or None for a float `[N, H, W, 3]` tensor with N >= 1."""
    if not isinstance(frames, torch.Tensor) or not frames.is_floating_point():
        return f"expected IMAGE frames (a float tensor [N, H, W, 3]), got {type(frames).__name__}"
    if frames.ndim != 4:
        return f"expected IMAGE frames [N, H, W, 3], got shape {tuple(frames.shape)}"
    if frames.shape[-1] != 3:
        return (f"frames have {frames.shape[-1]} channels; only RGB (3 channels) can be saved: "
                "convert the images to RGB first")
    if 0 in frames.shape:
        return f"there are no frames to save (shape {tuple(frames.shape)})"
    return None


def _check_write_arguments(frames, video_format: str, fps: float, quality: int) -> None:
    problem = _frames_problem(frames)
    if problem:
        raise VideoIOError("frames", problem)
    if video_format not in SAVE_FORMATS:
        raise VideoIOError("format", f"'{video_format}' is not one of {', '.join(SAVE_FORMATS)}")
    if not fps > 0:
        raise VideoIOError("fps", f"must be above 0, got {fps}")
    if not 1 <= quality <= 100:
        raise VideoIOError("quality", f"must be between 1 and 100, got {quality}")


def _uint8_frames(frames: torch.Tensor) -> Iterator[np.ndarray]:
    """Each float 0..1 frame as uint8 RGB (rounded, so frames read from 8-bit files come back exact)."""
    for frame in frames:
        yield frame.detach().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()


def _quality_scale(quality: int, worst: float, best: float) -> int:
    """Map quality 1..100 linearly onto an encoder setting running from `worst` to `best`."""
    return round(worst + (best - worst) * (quality - 1) / 99)


def _even_size(frame: np.ndarray) -> np.ndarray:
    """Pad an odd height/width by one row/column repeating the edge pixels (4:2:0 needs even sizes)."""
    height, width = frame.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return frame
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def _rgb_frame(frame: np.ndarray) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(frame, format="rgb24")


def _palette_frame(colors: int) -> Callable[[np.ndarray], av.VideoFrame]:
    """Quantize each frame to its own palette of `colors` colours with Floyd-Steinberg dithering."""

    def convert(frame: np.ndarray) -> av.VideoFrame:
        indexed = Image.fromarray(frame).quantize(colors=colors, method=Image.Quantize.FASTOCTREE,
                                                  dither=Image.Dither.FLOYDSTEINBERG)
        rgb = np.asarray(indexed.getpalette(), dtype=np.uint8).reshape(-1, 3)
        argb = np.zeros((256, 4), dtype=np.uint8)
        argb[:, 0] = 255
        argb[:len(rgb), 1:] = rgb
        return av.VideoFrame.from_ndarray((np.asarray(indexed), argb), format="pal8")

    return convert


def _even_rgb_frame(frame: np.ndarray) -> av.VideoFrame:
    return _rgb_frame(_even_size(frame))


def _write_with_av(frames: torch.Tensor, path: Path, video_format: str, fps: float, quality: int,
                   metadata: dict[str, str], on_progress) -> None:
    """mp4 (H.264), webm (VP9) or gif through PyAV, one frame at a time."""
    total, height, width = frames.shape[:3]
    container_options = {}
    if video_format == "mp4":
        codec, pixel_format, to_frame = "libx264", "yuv420p", _even_rgb_frame
        codec_options = {"crf": str(_quality_scale(quality, 51, 10))}
        container_options = {"movflags": "use_metadata_tags+faststart"}
        height, width = height + height % 2, width + width % 2
    elif video_format == "webm":
        codec, pixel_format, to_frame = "libvpx-vp9", "yuv420p", _rgb_frame
        codec_options = {"crf": str(_quality_scale(quality, 63, 10)), "b:v": "0", "row-mt": "1"}
    else:
        codec, pixel_format, to_frame = "gif", "pal8", _palette_frame(_quality_scale(quality, 2, 256))
        codec_options = {}
    with av.open(str(path), "w", format=video_format, options=container_options) as container:
        container.metadata.update(metadata)
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=codec_options)
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        for done, frame in enumerate(_uint8_frames(frames), start=1):
            container.mux(stream.encode(to_frame(frame)))
            if on_progress is not None:
                on_progress(done, total)
        container.mux(stream.encode())


def frame_durations_ms(count: int, fps: float) -> list[int]:
    """Whole-millisecond frame durations whose running sum stays on the exact `fps` timeline."""
    ends = [round((index + 1) * 1000 / fps) for index in range(count)]
    return [end - start for start, end in zip([0] + ends[:-1], ends)]


def _webp_exif(metadata: dict[str, str]) -> Image.Exif:
    """EXIF entries reading `key:value`, as ComfyUI's editor expects: prompt in Model, the rest from Make down."""
    exif = Image.Exif()
    tag = _EXIF_FIRST_EXTRA_TAG
    for key, value in metadata.items():
        if key == "prompt":
            exif[_EXIF_PROMPT_TAG] = f"prompt:{value}"
        else:
            exif[tag] = f"{key}:{value}"
            tag -= 1
    return exif


def _write_webp(frames: torch.Tensor, path: Path, fps: float, quality: int, metadata: dict[str, str],
                on_progress) -> None:
    """Animated WebP through Pillow; quality 100 is lossless. Identical consecutive frames are merged
    by the encoder into one longer frame."""
    images = []
    for done, frame in enumerate(_uint8_frames(frames), start=1):
        images.append(Image.fromarray(frame))
        if on_progress is not None:
            on_progress(done, len(frames))
    images[0].save(path, format="WEBP", save_all=True, append_images=images[1:], loop=0,
                   duration=frame_durations_ms(len(images), fps), lossless=quality == 100, quality=quality,
                   method=4, exif=_webp_exif(metadata))


def _write_png_frames(frames: torch.Tensor, folder: Path, metadata: dict[str, str], on_progress) -> None:
    """Lossless numbered PNGs; the first carries the workflow as text chunks."""
    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value)
    for index, frame in enumerate(_uint8_frames(frames)):
        Image.fromarray(frame).save(folder / FRAME_NAME.format(index), format="PNG", compress_level=4,
                                    pnginfo=info if index == 0 else None)
        if on_progress is not None:
            on_progress(index + 1, len(frames))


def write_video(frames: torch.Tensor, path: str | Path, video_format: str, fps: float, quality: int = 85,
                metadata: dict[str, str] | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> None:
    """Encode float `[N, H, W, 3]` frames to `path` (a folder for `png`), `quality` 1..100 (higher is better).

    - mp4: H.264 (libx264, yuv420p, crf 51..10 from quality), moov first (`+faststart`); an odd
      width or height is padded by one column/row repeating the edge pixels (never resampled).
    - webm: VP9 constant quality (crf 63..10 from quality); any size.
    - gif: one palette per frame (2..256 colours from quality), dithered; no workflow.
    - webp: animated, lossy (lossless at quality 100).
    - png: numbered lossless frames inside the folder `path`.

    `metadata` (e.g. `{"prompt": json, "workflow": json}`) goes where ComfyUI's editor reads it:
    mp4 `udta/meta` keys, Matroska tags, WebP EXIF, PNG text chunks. `on_progress(done, total)`
    runs after each frame.
    """
    _check_write_arguments(frames, video_format, fps, quality)
    path = Path(path)
    metadata = metadata if metadata and video_format in METADATA_FORMATS else {}
    if video_format == "png":
        _write_png_frames(frames, path, metadata, on_progress)
    elif video_format == "webp":
        _write_webp(frames, path, fps, quality, metadata, on_progress)
    else:
        _write_with_av(frames, path, video_format, fps, quality, metadata, on_progress)


def save_video(frames: torch.Tensor, output_dir: str | Path, filename_prefix: str, video_format: str, fps: float,
               quality: int = 85, metadata: dict[str, str] | None = None,
               on_progress: Callable[[int, int], None] | None = None) -> SavedVideo:
    """Write a new numbered output (`<prefix>_00001.mp4`, or the folder `<prefix>_00001/` for png)."""
    _check_write_arguments(frames, video_format, fps, quality)
    folder, _base = check_output_prefix(output_dir, filename_prefix)
    with _folders_removed_on_failure(folder):
        reserved = reserve_output_path(output_dir, filename_prefix, "" if video_format == "png" else f".{video_format}")
        with atomic_output(reserved) as temporary:
            write_video(frames, temporary, video_format, fps, quality, metadata, on_progress)
    if video_format == "png":
        folder, filenames = reserved, [FRAME_NAME.format(index) for index in range(frames.shape[0])]
    else:
        folder, filenames = reserved.parent, [reserved.name]
    subfolder = Path(os.path.relpath(folder, os.path.realpath(output_dir))).as_posix()
    return SavedVideo(reserved, "" if subfolder == "." else subfolder, filenames)
