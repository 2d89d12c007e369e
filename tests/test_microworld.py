"""The micro world the micro models are trained on, and the frame reader the quality tests judge with."""

from __future__ import annotations

import numpy as np
import pytest

from comfyui_text2video.models.builtin import write_tokenizer
from comfyui_text2video.tools import microworld as world


@pytest.mark.parametrize("colour, shape, direction", [
    ("red", "circle", "right"), ("green", "square", "up"), ("blue", "triangle", "left"), ("yellow", "circle", "down"),
])
def test_a_clip_shows_its_caption_as_the_reader_sees_it(colour, shape, direction):
    clip = world.make_clip(colour, shape, direction, np.random.default_rng(7))
    assert clip.frames.shape == (world.FRAMES, world.SIZE, world.SIZE, 3) and clip.frames.dtype == np.uint8
    seen = [world.read_object(frame) for frame in clip.frames]
    assert [r.colour for r in seen] == [colour] * world.FRAMES
    assert all(0.02 < r.area < 0.15 for r in seen)
    moved, travel = world.motion_direction(seen)
    assert moved == direction and 15 < travel < 30
    track, centres = np.array([r.centroid for r in seen]), np.array(clip.centres)
    np.testing.assert_allclose(track - track[0], centres - centres[0], atol=1.0)


def test_clips_are_a_function_of_the_seed():
    first, again, other = (world.make_clip("red", "triangle", "up", np.random.default_rng(seed)) for seed in (1, 1, 2))
    assert np.array_equal(first.frames, again.frames)
    assert not np.array_equal(first.frames, other.frames)


def test_captions_and_held_out_combinations():
    assert world.caption("red", "circle", "left") == "a red circle moving left"
    assert world.caption(None, "square", "up") == "a square moving up"
    assert world.caption("blue", None, None) == "a blue shape"
    combinations = world.training_combinations()
    assert len(combinations) == 4 * 3 * 4 - len(world.HELD_OUT)
    assert not set(world.HELD_OUT) & set(combinations)


def test_an_empty_frame_reads_as_no_object():
    blank = np.zeros((world.SIZE, world.SIZE, 3), np.float32) + np.array(world.BACKGROUND, np.float32) / 255
    reading = world.read_object(blank)
    assert (reading.area, reading.centroid, reading.colour) == (0.0, None, None)
    assert world.motion_direction([reading, reading]) == (None, 0.0)


def test_the_word_tokenizer_makes_each_world_word_one_token(tmp_path):
    from transformers import CLIPTokenizer

    write_tokenizer(tmp_path / "tokenizer", world.vocabulary())
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "tokenizer")
    words = world.caption("yellow", "triangle", "down").split()
    assert tokenizer.tokenize(" ".join(words).upper()) == [word + "</w>" for word in words]
    unknown = tokenizer.tokenize("a purple")  # not a world word: spelt out in smaller pieces, still readable
    assert len(unknown) > 2 and tokenizer.decode(tokenizer.convert_tokens_to_ids(unknown)).strip() == "a purple"
