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


def v_prediction_copy(builtin: str, name: str, scheduler_class: str) -> str:
    """A models/diffusers folder `name`: built-in `builtin` with a v-prediction scheduler config, as
    Stable Diffusion 2.x 768 ships (`prediction_type: v_prediction`). Returns its model name."""
    import json
    import shutil

    from comfyui_text2video import bridge
    from comfyui_text2video.models.loading import resolve_model_folder

    folder = dict(bridge.model_roots())["diffusers"] / name
    if not folder.exists():
        shutil.copytree(resolve_model_folder("builtin:" + builtin), folder)
        config_path = folder / "scheduler" / "scheduler_config.json"
        config = json.loads(config_path.read_text())
        config.update({"_class_name": scheduler_class, "prediction_type": "v_prediction"})
        config_path.write_text(json.dumps(config))
    return name


@pytest.fixture(scope="session")
def tiny_t2v_v(data_dir):
    """builtin:tiny-text2video as a v-prediction model (handles, float32, CPU)."""
    from comfyui_text2video.models.loading import load_model

    return load_model(v_prediction_copy("tiny-text2video", "tiny-text2video-v", "DDIMScheduler"), "float32")


@pytest.fixture(scope="session")
def tiny_sd_v(data_dir):
    """builtin:tiny-sd15 as a Stable Diffusion 2.x 768-style v-prediction image model (handles, float32, CPU)."""
    from comfyui_text2video.models.loading import load_model

    return load_model(v_prediction_copy("tiny-sd15", "tiny-sd2-v", "DDIMScheduler"), "float32")


@pytest.fixture(scope="session")
def tiny_sdxl(data_dir):
    """(model, clip, vae) handles of builtin:tiny-sdxl, in float32 on the CPU."""
    from comfyui_text2video.models.loading import load_model

    return load_model("builtin:tiny-sdxl", "float32")


@pytest.fixture(scope="session")
def tiny_ip2p(data_dir):
    """(model, clip, vae) handles of builtin:tiny-ip2p, in float32 on the CPU."""
    from comfyui_text2video.models.loading import load_model

    return load_model("builtin:tiny-ip2p", "float32")


@pytest.fixture(scope="session")
def tiny_svd(data_dir):
    """(model, clip, vae) handles of builtin:tiny-svd, in float32 on the CPU."""
    from comfyui_text2video.models.loading import load_model

    return load_model("builtin:tiny-svd", "float32")


class ProgressTicks(list):
    """The `(done, total)` of every progress-bar tick; with `cancel_at = n` the user presses Cancel at the n-th."""

    cancel_at: int | None = None


@pytest.fixture
def progress_ticks(monkeypatch):
    """Stands in for the host's progress bar and records what nodes show on it."""
    from comfyui_text2video import bridge

    ticks = ProgressTicks()

    class RecordingBar:
        def __init__(self, total, description=""):
            self.total = total

        def update(self, done, preview=None):
            ticks.append((done, self.total))
            if len(ticks) == ticks.cancel_at:
                bridge.request_interrupt()

        def close(self):
            pass

    monkeypatch.setattr(bridge, "Progress", RecordingBar)
    return ticks

