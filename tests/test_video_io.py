"""video_io: round trips for every format, embedded workflows, safe output paths, streaming selection."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_text2video.media import video_io
from comfyui_text2video.media.video_io import VideoIOError

STEP = 12  # red level per frame index: frame i is red i * STEP, so a decoded frame tells its index
LOSSY_TOLERANCE = 6
METADATA = {"prompt": json.dumps({"3": {"class_type": "T2VSampler", "inputs": {"seed": 7}}}),
            "workflow": json.dumps({"nodes": [{"id": 3, "type": "T2VSampler"}], "links": []})}


def numbered_frames(count: int, height: int = 24, width: int = 40) -> torch.Tensor:
    """Float IMAGE frames whose red level encodes the frame index."""
    frames = torch.empty(count, height, width, 3)
    frames[..., 0] = torch.arange(count).view(-1, 1, 1) * STEP / 255
    frames[..., 1] = 100 / 255
    frames[..., 2] = 200 / 255
    return frames


def frame_indices(frames: torch.Tensor) -> list[int]:
    """Read the indices back from uint8 frames made by `numbered_frames`."""
    return [round(level / STEP) for level in frames[..., 0].float().mean(dim=(1, 2)).tolist()]


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def write_with_pyav(path: Path, frames: torch.Tensor, fps: int, codec: str = "libx264") -> None:
    """An independent writer for containers the save node does not produce (mkv, mov)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in (frames * 255).round().to(torch.uint8).numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("video_format", video_io.SAVE_FORMATS)
def test_round_trip_keeps_count_size_order_and_fps(tmp_path, video_format):
    frames = numbered_frames(7)
    saved = video_io.save_video(frames, tmp_path, "clip", video_format, fps=8.0)
    loaded = video_io.read_frames(saved.path)
    assert loaded.frames.dtype == torch.uint8
    assert tuple(loaded.frames.shape) == (7, 24, 40, 3)
    assert frame_indices(loaded.frames) == list(range(7))
    assert loaded.fps == pytest.approx(8.0, abs=0.1)
    colour = loaded.frames[..., 1:].float().mean(dim=(0, 1, 2))
    assert colour.tolist() == pytest.approx([100, 200], abs=LOSSY_TOLERANCE)


@pytest.mark.parametrize("video_format, fps, tolerance", [("mp4", 29.97, 1e-6), ("webm", 12.5, 1e-6),
                                                          ("webp", 24.0, 0.2), ("gif", 12.5, 0.2)])
def test_fractional_frame_rates_survive(tmp_path, video_format, fps, tolerance):
    saved = video_io.save_video(numbered_frames(12), tmp_path, "clip", video_format, fps=fps)
    assert video_io.read_frames(saved.path).fps == pytest.approx(fps, abs=tolerance)


def test_webp_durations_stay_on_the_exact_timeline():
    durations = video_io.frame_durations_ms(24, 24.0)
    assert set(durations) == {41, 42}
    assert sum(durations) == 1000


def test_png_frames_are_lossless(tmp_path):
    pixels = torch.randint(0, 256, (3, 17, 23, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    saved = video_io.save_video(pixels.float() / 255, tmp_path, "frames", "png", fps=8.0)
    assert saved.path.is_dir()
    assert saved.filenames == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    assert sorted(path.name for path in saved.path.iterdir()) == saved.filenames
    assert torch.equal(video_io.read_frames(saved.path).frames, pixels)


def test_mp4_pads_odd_sizes_with_the_edge_pixels(tmp_path):
    frames = torch.zeros(3, 33, 45, 3)
    frames[:, :, -1] = 1.0  # a white last column: the padding must repeat it, not add black
    saved = video_io.save_video(frames, tmp_path, "odd", "mp4", fps=8.0)
    with av.open(str(saved.path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (stream.width, stream.height) == (46, 34)
    loaded = video_io.read_frames(saved.path).frames.float()
    assert loaded[:, :, -1].mean() > 240
    assert loaded[:, -1, :40].mean() < 15  # the padded bottom row repeats the black row above it


def test_webm_keeps_odd_sizes(tmp_path):
    saved = video_io.save_video(numbered_frames(3, 33, 45), tmp_path, "odd", "webm", fps=8.0)
    assert tuple(video_io.read_frames(saved.path).frames.shape[1:3]) == (33, 45)


# --------------------------------------------------------------------------- embedded workflow


def test_mp4_embeds_the_workflow_in_front_of_the_media(tmp_path):
    saved = video_io.save_video(numbered_frames(3), tmp_path, "clip", "mp4", 8.0, metadata=METADATA)
    with av.open(str(saved.path)) as container:
        assert json.loads(container.metadata["workflow"]) == json.loads(METADATA["workflow"])
        assert json.loads(container.metadata["prompt"]) == json.loads(METADATA["prompt"])
    data = saved.path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart: the editor reads only the start
    assert data.index(b"workflow") < data.index(b"mdat")


def test_webm_embeds_the_workflow_as_matroska_tags(tmp_path):
    saved = video_io.save_video(numbered_frames(3), tmp_path, "clip", "webm", 8.0, metadata=METADATA)
    with av.open(str(saved.path)) as container:
        tags = {key.lower(): value for key, value in container.metadata.items()}
    assert json.loads(tags["workflow"]) == json.loads(METADATA["workflow"])
    assert json.loads(tags["prompt"]) == json.loads(METADATA["prompt"])


def test_webp_embeds_the_workflow_in_exif(tmp_path):
    saved = video_io.save_video(numbered_frames(3), tmp_path, "clip", "webp", 8.0, metadata=METADATA)
    with Image.open(saved.path) as image:
        exif = image.getexif()
    assert exif[0x0110] == f"prompt:{METADATA['prompt']}"
    assert exif[0x010F] == f"workflow:{METADATA['workflow']}"


def test_png_frames_carry_the_workflow_as_text_chunks(tmp_path):
    saved = video_io.save_video(numbered_frames(2), tmp_path, "frames", "png", 8.0, metadata=METADATA)
    with Image.open(saved.path / "frame_00000.png") as first:
        assert first.text == METADATA


def test_gif_is_written_without_metadata(tmp_path):
    saved = video_io.save_video(numbered_frames(2), tmp_path, "clip", "gif", 8.0, metadata=METADATA)
    assert b"workflow" not in saved.path.read_bytes()


# --------------------------------------------------------------------------- output paths


def test_saves_count_up_and_never_overwrite(tmp_path):
    first = video_io.save_video(numbered_frames(2), tmp_path, "Text2Video/video", "mp4", 8.0)
    first_bytes = first.path.read_bytes()
    second = video_io.save_video(numbered_frames(3), tmp_path, "Text2Video/video", "mp4", 8.0)
    assert (first.path.name, second.path.name) == ("video_00001.mp4", "video_00002.mp4")
    assert (first.subfolder, second.subfolder) == ("Text2Video", "Text2Video")
    assert first.path.read_bytes() == first_bytes


def test_counter_continues_after_the_highest_number_of_any_format(tmp_path):
    (tmp_path / "video_00007.gif").touch()
    (tmp_path / "video_00003").mkdir()
    saved = video_io.save_video(numbered_frames(2), tmp_path, "video", "png", 8.0)
    assert saved.path.name == "video_00008"
    assert saved.subfolder == "video_00008"


def test_reservations_are_exclusive(tmp_path):
    first = video_io.reserve_output_path(tmp_path, "clip", ".mp4")
    second = video_io.reserve_output_path(tmp_path, "clip", ".mp4")
    assert first != second and first.exists() and second.exists()


def test_a_name_taken_between_scan_and_claim_is_skipped(tmp_path, monkeypatch):
    """A concurrent save that takes the scanned number first: the claim moves on to the next one."""
    real_listdir = os.listdir

    def listdir_then_race(folder):
        names = real_listdir(folder)
        (Path(folder) / "clip_00001.mp4").touch()
        return names

    monkeypatch.setattr(video_io.os, "listdir", listdir_then_race)
    assert video_io.reserve_output_path(tmp_path, "clip", ".mp4").name == "clip_00002.mp4"


@pytest.mark.parametrize("prefix", ["../escape", "Text2Video/../../escape", "/tmp/escape", "\\\\server\\share\\x",
                                    "C:\\Users\\x", "C:x", "Text2Video/", "", "  "])
def test_prefixes_outside_the_output_folder_are_refused(tmp_path, prefix):
    output = tmp_path / "output"
    output.mkdir()
    with pytest.raises(VideoIOError) as refused:
        video_io.save_video(numbered_frames(2), output, prefix, "mp4", 8.0)
    assert refused.value.argument == "filename_prefix"
    assert list(tmp_path.rglob("*")) == [output]


def test_a_symlink_leading_out_of_the_output_folder_is_refused(tmp_path):
    output, outside = tmp_path / "output", tmp_path / "outside"
    output.mkdir()
    outside.mkdir()
    (output / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(VideoIOError, match="out of the output folder"):
        video_io.save_video(numbered_frames(2), output, "link/video", "mp4", 8.0)
    assert list(outside.iterdir()) == []


# --------------------------------------------------------------------------- no partial files


class EncoderFailure(RuntimeError):
    pass


def fail_after(frames_written: int, error: BaseException):
    def on_progress(done, total):
        if done == frames_written:
            raise error
    return on_progress


@pytest.mark.parametrize("video_format, error", [("mp4", EncoderFailure("boom")), ("webm", KeyboardInterrupt()),
                                                 ("gif", EncoderFailure("boom")), ("png", KeyboardInterrupt())])
def test_a_failure_while_writing_leaves_no_file(tmp_path, video_format, error):
    with pytest.raises(type(error)):
        video_io.save_video(numbered_frames(6), tmp_path, "sub/clip", video_format, 8.0,
                            on_progress=fail_after(3, error))
    assert files_under(tmp_path) == []
    assert not (tmp_path / "sub").exists()  # the folder made for it is gone too
    retry = video_io.save_video(numbered_frames(2), tmp_path, "sub/clip", video_format, 8.0)
    assert retry.path.name.startswith("clip_00001")


def test_a_failing_webp_encoder_leaves_no_file(tmp_path, monkeypatch):
    def write_half_then_fail(image, path, *args, **kwargs):
        Path(path).write_bytes(b"RIFF partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        video_io.save_video(numbered_frames(3), tmp_path, "clip", "webp", 8.0)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("frames, problem", [
    (torch.zeros(0, 8, 8, 3), "no frames"),
    (torch.zeros(2, 8, 8, 4), "4 channels"),
    (torch.zeros(2, 8, 8, 1), "1 channels"),
    (torch.zeros(8, 8, 3), "shape"),
    (np.zeros((2, 8, 8, 3), dtype=np.float32), "float tensor"),
])
def test_frames_that_cannot_be_saved_are_refused_before_writing(tmp_path, frames, problem):
    with pytest.raises(VideoIOError, match=problem) as refused:
        video_io.save_video(frames, tmp_path, "clip", "mp4", 8.0)
    assert refused.value.argument == "frames"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argument, value", [("fps", 0.0), ("fps", -3.0), ("quality", 0), ("quality", 101),
                                             ("video_format", "avi")])
def test_bad_save_settings_are_refused_before_writing(tmp_path, argument, value):
    settings = {"fps": 8.0, "quality": 85, "video_format": "mp4"} | {argument: value}
    with pytest.raises(VideoIOError) as refused:
        video_io.save_video(numbered_frames(2), tmp_path, "clip", **settings)
    assert refused.value.argument == {"video_format": "format"}.get(argument, argument)
    assert list(tmp_path.iterdir()) == []


def test_quality_changes_the_encoding(tmp_path):
    noisy = torch.rand(4, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    low = video_io.save_video(noisy, tmp_path, "low", "mp4", 8.0, quality=10)
    high = video_io.save_video(noisy, tmp_path, "high", "mp4", 8.0, quality=100)
    assert high.path.stat().st_size > 2 * low.path.stat().st_size


# --------------------------------------------------------------------------- reading


@pytest.fixture(scope="module")
def numbered_sources(tmp_path_factory):
    """20 numbered frames at 12 fps as a png folder, an mp4, an mkv, a mov, a gif and a webp (read only)."""
    tmp_path = tmp_path_factory.mktemp("numbered")
    frames = numbered_frames(20)
    sources = {fmt: video_io.save_video(frames, tmp_path, fmt, fmt, fps=12.0).path
               for fmt in ("png", "mp4", "gif", "webp")}
    for container in ("mkv", "mov"):
        sources[container] = tmp_path / f"numbered.{container}"
        write_with_pyav(sources[container], frames, fps=12)
    return sources


@pytest.mark.parametrize("source", ["png", "mp4", "mkv", "mov", "gif", "webp"])
@pytest.mark.parametrize("skip_first, select_every_nth, frame_limit, expected", [
    (0, 1, 0, list(range(20))),
    (3, 4, 3, [3, 7, 11]),
    (5, 3, 0, [5, 8, 11, 14, 17]),
    (0, 7, 0, [0, 7, 14]),
    (19, 5, 2, [19]),
    (2, 1, 4, [2, 3, 4, 5]),
])
def test_selection_skips_then_strides_then_limits(numbered_sources, source, skip_first, select_every_nth,
                                                  frame_limit, expected):
    loaded = video_io.read_frames(numbered_sources[source], skip_first, select_every_nth, frame_limit)
    assert frame_indices(loaded.frames) == expected
    source_fps = 8.0 if source == "png" else 12.0  # an image folder has no rate of its own
    assert loaded.fps == pytest.approx(source_fps / select_every_nth, rel=0.02)


class CountingContainer:
    """Wraps a PyAV input container and counts the frames handed out by `decode`."""

    opened: list[CountingContainer] = []

    def __init__(self, container):
        self.container = container
        self.decoded = 0
        CountingContainer.opened.append(self)

    def __getattr__(self, name):
        return getattr(self.container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.container.close()

    def decode(self, *args, **kwargs):
        for frame in self.container.decode(*args, **kwargs):
            self.decoded += 1
            yield frame


def test_decoding_stops_at_the_last_selected_frame(tmp_path, monkeypatch):
    path = video_io.save_video(numbered_frames(60), tmp_path, "long", "mp4", 12.0).path
    real_open = av.open
    CountingContainer.opened.clear()
    monkeypatch.setattr(video_io.av, "open", lambda *args, **kwargs: CountingContainer(real_open(*args, **kwargs)))
    loaded = video_io.read_frames(path, skip_first=2, select_every_nth=2, frame_limit=3)
    assert frame_indices(loaded.frames) == [2, 4, 6]
    assert [container.decoded for container in CountingContainer.opened] == [7]


def test_image_folders_open_only_the_selected_images(tmp_path, monkeypatch):
    folder = video_io.save_video(numbered_frames(30), tmp_path, "frames", "png", 8.0).path
    opened = []
    real_open = Image.open
    monkeypatch.setattr(video_io.Image, "open", lambda path, *args: opened.append(Path(path).name)
                        or real_open(path, *args))
    loaded = video_io.read_frames(folder, skip_first=2, select_every_nth=3, frame_limit=2)
    assert frame_indices(loaded.frames) == [2, 5]
    assert set(opened) == {"frame_00002.png", "frame_00005.png"}


def test_frames_are_reported_as_they_are_kept(numbered_sources):
    reported = []
    video_io.read_frames(numbered_sources["mp4"], frame_limit=4, on_frame=reported.append)
    assert reported == [1, 2, 3, 4]


def test_images_are_read_in_natural_order(tmp_path):
    folder = tmp_path / "shot"
    folder.mkdir()
    for index in (10, 2, 1):
        Image.fromarray(np.full((8, 8, 3), index * STEP, np.uint8)).save(folder / f"img{index}.png")
    assert frame_indices(video_io.read_frames(folder).frames) == [1, 2, 10]


@pytest.mark.parametrize("width, height, expected", [(0, 0, (40, 24)), (20, 0, (20, 12)), (0, 48, (80, 48)),
                                                     (16, 16, (16, 16))])
def test_resize_to_the_requested_size(numbered_sources, width, height, expected):
    for source in ("mp4", "png", "webp"):
        loaded = video_io.read_frames(numbered_sources[source], frame_limit=2, width=width, height=height)
        assert tuple(loaded.frames.shape[1:3]) == (expected[1], expected[0])
        assert frame_indices(loaded.frames) == [0, 1]


@pytest.mark.parametrize("argument, value", [("width", 5), ("height", 7), ("select_every_nth", 0),
                                             ("skip_first", -1), ("frame_limit", -2)])
def test_bad_selection_arguments_are_refused(numbered_sources, argument, value):
    with pytest.raises(VideoIOError) as refused:
        video_io.read_frames(numbered_sources["mp4"], **{argument: value})
    assert refused.value.argument == argument


def test_skipping_every_frame_is_an_error_on_skip_first(numbered_sources):
    with pytest.raises(VideoIOError, match="none of the 20 frames") as refused:
        video_io.read_frames(numbered_sources["mp4"], skip_first=20)
    assert refused.value.argument == "skip_first"


def make_empty_video(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        container.start_encoding()


def make_audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("flac", rate=8000, layout="mono")
        silence = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        silence.sample_rate, silence.pts = 8000, 0
        container.mux(stream.encode(silence))
        container.mux(stream.encode())


def make_gif_claiming_65535_squared(path: Path) -> None:
    """A small GIF whose header claims a size Pillow refuses as a decompression bomb."""
    Image.new("P", (8, 8)).save(path, "GIF")
    data = bytearray(path.read_bytes())
    data[6:10] = b"\xff\xff\xff\xff"  # logical screen size
    descriptor = data.index(0x2C)
    data[descriptor + 5:descriptor + 9] = b"\xff\xff\xff\xff"  # first frame size
    path.write_bytes(bytes(data))


def junk(size: int) -> bytes:
    """Fixed random bytes: fresh ones sometimes look like an audio stream (about 1 run in 100)."""
    return random.Random(size).randbytes(size)


@pytest.mark.parametrize("name, make, problem", [
    ("absent.mp4", lambda path: None, "does not exist"),
    ("zero.mp4", lambda path: path.touch(), "empty file"),
    ("audio.mkv", make_audio_only, "no video stream"),
    ("junk.mp4", lambda path: path.write_bytes(junk(4096)), "cannot be decoded"),
    ("junk.gif", lambda path: path.write_bytes(b"GIF89a" + junk(200)), "cannot be decoded"),
    ("huge.gif", lambda path: make_gif_claiming_65535_squared(path), "cannot be decoded"),
    ("junk.webp", lambda path: path.write_bytes(b"RIFF\x10\x00\x00\x00WEBPVP8 " + junk(64)),
     "cannot be decoded"),
    ("empty.mkv", make_empty_video, "cannot be decoded"),
])
def test_unreadable_files_are_errors_on_the_path(tmp_path, name, make, problem):
    path = tmp_path / name
    make(path)
    with pytest.raises(VideoIOError, match=problem) as refused:
        video_io.read_frames(path)
    assert refused.value.argument == "path"
    assert name in refused.value.problem


def test_a_truncated_video_is_an_error(tmp_path):
    saved = video_io.save_video(numbered_frames(10), tmp_path, "cut", "webm", 8.0).path
    truncated = tmp_path / "truncated.webm"
    truncated.write_bytes(saved.read_bytes()[:300])
    with pytest.raises(VideoIOError) as refused:
        video_io.read_frames(truncated)
    assert refused.value.argument == "path"


# --------------------------------------------------------------------------- input folder


@pytest.fixture
def input_dir(tmp_path):
    root = tmp_path / "input"
    (root / "clips" / "nested").mkdir(parents=True)
    (root / "frames").mkdir()
    (root / "empty").mkdir()
    (root / ".hidden").mkdir()
    for name in ("a.mp4", "clips/b.webm", "clips/nested/c.MOV", "d.gif", "e.webp", "f.mkv", ".hidden/g.mp4"):
        (root / name).write_bytes(b"x")
    for name in ("notes.txt", "still.png", "frames/0001.png", "frames/0002.png", "empty/readme.md"):
        (root / name).write_bytes(b"x")
    (tmp_path / "secret.mp4").write_bytes(b"x")
    return root


def test_listing_finds_videos_and_image_folders_recursively(input_dir):
    assert video_io.list_input_videos(input_dir) == ["a.mp4", "clips/b.webm", "clips/nested/c.MOV", "d.gif",
                                                     "e.webp", "f.mkv", "frames"]


def test_listing_a_missing_input_folder_is_empty(tmp_path):
    assert video_io.list_input_videos(tmp_path / "absent") == []


@pytest.mark.parametrize("name", ["a.mp4", "clips/nested/c.MOV", "frames", "clips/../a.mp4"])
def test_names_inside_the_input_folder_resolve(input_dir, name):
    assert video_io.resolve_input_video(input_dir, name) == (input_dir / name).resolve()


def test_an_absolute_path_inside_the_input_folder_resolves(input_dir):
    assert video_io.resolve_input_video(input_dir, str(input_dir / "a.mp4")) == input_dir / "a.mp4"


@pytest.mark.parametrize("name, problem", [("../secret.mp4", "outside the input folder"),
                                           ("clips/../../secret.mp4", "outside the input folder"),
                                           ("{outside}", "outside the input folder"),
                                           ("link.mp4", "outside the input folder"),
                                           ("missing.mp4", "not found"),
                                           ("notes.txt", "not a supported video"),
                                           ("empty", "holds no"),
                                           ("", "no video chosen")])
def test_names_that_escape_or_do_not_exist_are_refused(input_dir, name, problem):
    (input_dir / "link.mp4").symlink_to(input_dir.parent / "secret.mp4")
    name = name.format(outside=input_dir.parent / "secret.mp4")
    with pytest.raises(VideoIOError, match=problem) as refused:
        video_io.resolve_input_video(input_dir, name)
    assert refused.value.argument == "path"


def test_fingerprint_follows_file_content(tmp_path):
    path = tmp_path / "a.mp4"
    path.write_bytes(b"one")
    first = video_io.content_fingerprint(path)
    assert video_io.content_fingerprint(path) == first
    path.write_bytes(b"two")
    assert video_io.content_fingerprint(path) != first


def test_fingerprint_of_a_folder_follows_its_images(input_dir):
    folder = input_dir / "frames"
    first = video_io.content_fingerprint(folder)
    (folder / "notes.txt").write_text("not an image")
    assert video_io.content_fingerprint(folder) == first
    (folder / "0003.png").write_bytes(b"x")
    assert video_io.content_fingerprint(folder) != first
