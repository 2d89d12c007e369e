"""The editor in a real browser: headless Chromium (Playwright) on a real ComfyUI server with the pack installed.

Every test in this folder is marked `browser` and skipped, with the reason, unless Playwright for Python is
installed, a Chromium is found (`T2V_CHROMIUM`, else `chromium` or `chromium-browser` on the PATH) and
`COMFYUI_DIR`/`COMFYUI_PYTHON` point at a ComfyUI checkout and its interpreter (as for the integration tests).
Screenshots go to `T2V_ARTIFACTS` (default: `<tmp>/t2v-browser-artifacts`), never into the repository.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "integration"))

from comfy_harness import ComfyServer, comfyui_paths, install_pack  # noqa: E402
from editor import Editor  # noqa: E402


def chromium_path() -> str | None:
    configured = os.environ.get("T2V_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def why_not_runnable() -> str | None:
    paths = comfyui_paths()
    if isinstance(paths, str):
        return paths
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs Playwright for Python: pip install -r requirements-dev.txt"
    if chromium_path() is None:
        return ("needs a Chromium: apt-get install chromium (or set T2V_CHROMIUM to its executable); "
                "`playwright install` is not needed")
    return None


def pytest_collection_modifyitems(config, items):
    reason = why_not_runnable()
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.browser)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("T2V_ARTIFACTS") or Path(tempfile.gettempdir()) / "t2v-browser-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def comfy() -> ComfyServer:
    """A ComfyUI server with the pack copied into custom_nodes under a user-like folder name.

    `T2V_COMFY_PORT` + `T2V_COMFY_BASE` (its --base-directory) use a server already running instead (while
    working on these tests: a start costs minutes on a busy machine).
    """
    comfyui_dir, python = comfyui_paths()
    if os.environ.get("T2V_COMFY_PORT"):
        server = ComfyServer(comfyui_dir, python, Path(os.environ["T2V_COMFY_BASE"]))
        server.port = int(os.environ["T2V_COMFY_PORT"])
        server.post("/settings/Comfy.TutorialCompleted", True)
        yield server
        return
    base = Path(tempfile.mkdtemp(prefix="t2v-browser-"))
    install_pack(base / "custom_nodes")
    for folder in ("input", "output"):
        (base / folder).mkdir()
    server = ComfyServer(comfyui_dir, python, base)
    server.start()
    atexit.register(server.stop)
    try:
        server.wait_ready()
        failure = server.pack_import_failure()
        if failure:
            pytest.fail(f"ComfyUI could not import the pack:\n{failure}", pytrace=False)
        server.post("/settings/Comfy.TutorialCompleted", True)  # no template dialog over the canvas
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def editor(comfy, browser, artifacts, request) -> Editor:
    """A fresh editor tab on the server; the test fails if the page logged an error about the pack."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    opened = Editor(page, comfy, artifacts, request.node.name)
    try:
        opened.open()
        yield opened
        opened.assert_no_pack_errors()
    finally:
        opened.screenshot("last")
        context.close()
