"""One real ComfyUI server per test session, with the pack installed as a user would (a clean copy).

Every test in this folder is marked `integration` and skipped, with the reason, unless `COMFYUI_DIR` and
`COMFYUI_PYTHON` point at a ComfyUI checkout and its interpreter.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest

from comfy_harness import ComfyServer, comfyui_paths, install_pack
from model_builder import UNSEEN_MODEL, build_test_model

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    paths = comfyui_paths()
    skip = pytest.mark.skip(reason=paths) if isinstance(paths, str) else None
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)
            if skip is not None:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def comfy_base():
    """The server's base folder: custom_nodes (the pack), models, input, output."""
    base = Path(tempfile.mkdtemp(prefix="t2v-comfyui-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def comfy(comfy_base) -> ComfyServer:
    """The running server; stopped at the end of the session, also when a test or the start fails."""
    comfyui_dir, python = comfyui_paths()
    install_pack(comfy_base / "custom_nodes")
    build_test_model(comfy_base / "models" / "diffusers" / UNSEEN_MODEL)
    for folder in ("input", "output"):
        (comfy_base / folder).mkdir(exist_ok=True)
    server = ComfyServer(comfyui_dir, python, comfy_base)
    server.start()
    atexit.register(server.stop)  # also when pytest itself is stopped before the fixture's teardown
    try:
        server.wait_ready()
        failure = server.pack_import_failure()
        if failure:
            pytest.fail(f"ComfyUI could not import the pack:\n{failure}", pytrace=False)
        yield server
    finally:
        server.stop()


@pytest.fixture
def require_nodes(comfy):
    """`require_nodes(*ids)`: skip the test (naming them) if any of these nodes is not registered yet."""
    def require(*node_ids):
        registered = comfy.object_info()
        missing = [node_id for node_id in node_ids if node_id not in registered]
        if missing:
            pytest.skip(f"not in /object_info yet: {', '.join(missing)}")
    return require


@pytest.fixture
def object_info_choices(comfy):
    """`object_info_choices(node, input)`: the current choices of a combo input."""
    def choices(node_id, input_name):
        info = comfy.object_info(node_id)["input"]
        spec = {**info.get("required", {}), **info.get("optional", {})}[input_name]
        return spec[0] if isinstance(spec[0], list) else spec[1]["options"]
    return choices


@pytest.fixture(scope="session")
def sample_video(comfy):
    """A 6-frame 64x64 mp4 with moving colours in the server's input folder, written with PyAV."""
    import av
    import numpy as np

    path = comfy.input_dir / "it-sample.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for index in range(6):
            pixels = np.zeros((64, 64, 3), dtype=np.uint8)
            pixels[:, :, 0] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
            pixels[:, :, 1] = 40 * index
            pixels[8 * index:8 * index + 16, 8 * index:8 * index + 16, 2] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path
