"""Shared fixtures: an isolated data folder and the built-in tiny models, built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("T2V_NO_PROGRESS", "1")


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory):
    """Every test runs against a private data folder (models, input, output)."""
    root = tmp_path_factory.mktemp("t2v-data")
    previous = os.environ.get("T2V_DATA_DIR")
    os.environ["T2V_DATA_DIR"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("T2V_DATA_DIR", None)
    else:
        os.environ["T2V_DATA_DIR"] = previous


@pytest.fixture(scope="session")
def tiny_t2v(data_dir):
    """(model, clip, vae) handles of builtin:tiny-text2video, in float32 on the CPU."""
    from comfyui_text2video.models.loading import load_model

    return load_model("builtin:tiny-text2video", "float32")


@pytest.fixture(scope="session")
def tiny_sd(data_dir):
    """(model, clip, vae) handles of builtin:tiny-sd15, in float32 on the CPU."""
    from comfyui_text2video.models.loading import load_model

    return load_model("builtin:tiny-sd15", "float32")
