"""Driving the ComfyUI editor as a user would, through Playwright: drop files, search nodes, run, save.

What it reads back comes from the page's public objects (`window.app`, the graph's nodes and their widgets)
and from the DOM the user sees.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import time
from pathlib import Path

PACK_MARKERS = ("ComfyUI-Text2Video", "Text2Video", "t2v")
"""Console messages or sources that name one of these are the pack's."""
RUN_TIMEOUT = 900.0  # a busy CPU-only machine takes minutes for an example
LOAD_TIMEOUT = 180_000  # ms
MIME_TYPES = {".json": "application/json", ".mp4": "video/mp4", ".webm": "video/webm", ".webp": "image/webp",
              ".png": "image/png", ".gif": "image/gif", ".mkv": "video/x-matroska", ".mov": "video/quicktime"}

_DROP = """async ({name, b64, type}) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type}));
  const canvas = document.querySelector('#graph-canvas');
  const box = canvas.getBoundingClientRect();
  const init = {bubbles: true, cancelable: true, dataTransfer: transfer,
                clientX: box.x + box.width * 0.8, clientY: box.y + box.height * 0.9};
  for (const type of ['dragenter', 'dragover', 'drop']) canvas.dispatchEvent(new DragEvent(type, init));
}"""

_NODE_PREVIEW = """(id) => {
  const node = app.graph.getNodeById(id);
  const previews = (node.widgets || []).filter((w) => w.element && w.element.querySelector('video, img'));
  const widget = (node.widgets || []).find((w) => w.name === 't2v_result' || w.name === 't2v_clip');
  const media = widget ? widget.element.querySelector('.t2v-stage > video, .t2v-stage > img') : null;
  return {
    previewWidgets: previews.map((w) => w.name),
    tag: media ? media.tagName.toLowerCase() : null,
    src: media ? decodeURIComponent((media.currentSrc || media.src).replace(/\+/g, ' ')) : null,
    loaded: media ? (media.tagName === 'VIDEO' ? media.readyState >= 2 && media.videoWidth > 0
                                               : media.complete && media.naturalWidth > 0) : false,
    mediaSize: media ? [media.videoWidth || media.naturalWidth, media.videoHeight || media.naturalHeight] : null,
    scrubber: widget ? !!widget.element.querySelector('input[type=range]') : false,
    caption: widget ? widget.element.querySelector('.t2v-caption').textContent : null,
    nodeSize: [node.size[0], node.size[1]],
    box: widget ? [widget.element.clientWidth, widget.element.clientHeight] : null,
  };
}"""


class Editor:
    """One editor tab; `console` collects the page's errors."""

    def __init__(self, page, server, artifacts: Path, name: str):
        self.page = page
        self.server = server
        self.artifacts = artifacts
        self.name = name
        self.errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))

    def _on_console(self, message) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} ({message.location.get('url', '')})")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/"

    def open(self) -> None:
        self.page.goto(self.url, wait_until="domcontentloaded", timeout=LOAD_TIMEOUT)
        self.page.wait_for_function("() => window.app && window.app.graph && window.app.canvas",
                                    timeout=LOAD_TIMEOUT)
        self.page.wait_for_function(
            "() => (app.extensions || []).some((e) => e.name === 'Text2Video.Editor')", timeout=LOAD_TIMEOUT)

    def pack_errors(self) -> list[str]:
        return [error for error in self.errors if any(marker in error for marker in PACK_MARKERS)]

    def assert_no_pack_errors(self) -> None:
        assert self.pack_errors() == [], "\n".join(self.pack_errors())

    def screenshot(self, label: str) -> Path:
        path = self.artifacts / f"{self.name}-{label}.png"
        self.page.screenshot(path=str(path))
        return path

    def evaluate(self, script: str, argument=None):
        return self.page.evaluate(script, argument)

    # ------------------------------------------------------------------ workflows

    def drop_file(self, path: Path) -> None:
        """Drop a file on the canvas the way a file manager does: a File in a DragEvent."""
        mime = MIME_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or ""
        self.evaluate(_DROP, {"name": path.name, "b64": base64.b64encode(path.read_bytes()).decode(), "type": mime})

    def drop_workflow(self, path: Path, expected_types: list[str]) -> None:
        """Drop `path` and wait until the canvas holds exactly the nodes of `expected_types`."""
        self.evaluate("() => app.graph.clear()")
        self.drop_file(path)
        expected = sorted(expected_types)
        self.page.wait_for_function("(expected) => JSON.stringify(app.graph.nodes.map((n) => n.type).sort()) "
                                    "=== JSON.stringify(expected)", arg=expected, timeout=30_000)
        self.page.wait_for_timeout(300)  # widgets settle (combo values, previews)

    def graph(self) -> dict:
        """The workflow as the editor would save it."""
        return self.evaluate("() => JSON.parse(JSON.stringify(app.graph.serialize()))")

    def missing_node_types(self) -> list[str]:
        return self.evaluate("() => app.graph.nodes.filter((n) => n.has_errors || !n.constructor.nodeData)"
                             ".map((n) => n.type)")

    def node_ids(self, node_type: str) -> list[int]:
        return self.evaluate("(type) => app.graph.nodes.filter((n) => n.type === type).map((n) => n.id)", node_type)

    def set_widget(self, node_id: int, name: str, value) -> None:
        """Set a widget value as the user's edit does (the value, then the widget's callback)."""
        self.evaluate("""([id, name, value]) => {
          const widget = app.graph.getNodeById(id).widgets.find((w) => w.name === name);
          widget.value = value;
          widget.callback?.(widget.value);
          app.graph.setDirtyCanvas(true, true);
        }""", [node_id, name, value])

    def widget_value(self, node_id: int, name: str):
        return self.evaluate("([id, name]) => app.graph.getNodeById(id).widgets.find((w) => w.name === name).value",
                             [node_id, name])

    def preview(self, node_id: int) -> dict:
        return self.evaluate(_NODE_PREVIEW, node_id)

    def wait_for_preview(self, node_id: int, filename_part: str, timeout: float = 30.0) -> dict:
        """The node's preview once it shows a loaded file whose URL contains `filename_part`."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.preview(node_id)
            if state["loaded"] and filename_part in (state["src"] or ""):
                self.page.wait_for_timeout(200)  # the node's size follows the media's
                return self.preview(node_id)
            if time.monotonic() > deadline:
                raise AssertionError(f"node {node_id} does not show {filename_part!r}: {state}")
            self.page.wait_for_timeout(200)

    # ------------------------------------------------------------------ running

    def run(self, timeout: float = RUN_TIMEOUT) -> dict:
        """Click Run and wait until the prompt finished; its `/history` entry."""
        with self.page.expect_response(lambda response: response.url.endswith("/prompt")
                                       and response.request.method == "POST") as queued:
            self.page.get_by_role("button", name="Run", exact=True).first.click()
        prompt_id = queued.value.json()["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.server.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[-3000:]
                return entry
            time.sleep(0.3)
        raise TimeoutError(f"the run did not finish within {timeout:.0f} s:\n{self.server.log_tail()}")

    def save_workflow(self, name: str) -> dict:
        """File > Save in the editor's menu, under `name`; the saved file's content (from the user's folder)."""
        self.page.mouse.click(20, 20)  # the menu button in the top left corner
        self.page.get_by_role("menuitem", name="File", exact=True).hover()
        self.page.get_by_role("menuitem", name="Save", exact=True).click()
        prompt = self.page.locator(".p-dialog input").first
        prompt.wait_for(timeout=10_000)
        prompt.fill(name)
        prompt.press("Enter")
        path = self.server.base / "user" / "default" / "workflows" / f"{name}.json"
        deadline = time.monotonic() + 20
        while not path.exists():
            assert time.monotonic() < deadline, f"{path} was not written"
            time.sleep(0.2)
        time.sleep(0.3)
        return json.loads(path.read_text())

    def add_node_by_search(self, query: str, display_name: str, position=(60, 80)) -> int:
        """Double-click the empty canvas, type `query`, pick `display_name`; the new node's id.

        The node is then moved to `position` (graph coordinates), away from where the next double-click goes."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        before = set(self.evaluate("() => app.graph.nodes.map((n) => n.id)"))
        box = self.page.locator("#graph-canvas").bounding_box()
        option = self.page.get_by_role("option").filter(has_text=display_name).first
        for attempt in range(2):  # on a busy machine the search box can miss the first keystrokes: open it again
            self.page.mouse.dblclick(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.75)
            self.page.keyboard.type(query, delay=20)
            try:
                option.wait_for(timeout=15_000)
                break
            except PlaywrightTimeout:
                if attempt:
                    raise
                self.page.keyboard.press("Escape")
        option.click()
        self.page.wait_for_function("(count) => app.graph.nodes.length > count", arg=len(before), timeout=10_000)
        [added] = set(self.evaluate("() => app.graph.nodes.map((n) => n.id)")) - before
        self.evaluate("([id, position]) => { app.graph.getNodeById(id).pos = position; app.graph.setDirtyCanvas(true, true); }",
                      [added, list(position)])
        return added

    def upload_with_button(self, node_id: int, path: Path) -> tuple[str, str]:
        """Press the node's upload button and pick `path` in its file dialog; the dialog's `accept` list and the
        name the server gave the file (`clip (1).mp4` if another `clip.mp4` was there), once the node selects it.

        (The button is pressed through its callback: a mouse click on the canvas does not always count as the user
        gesture Chromium wants before it opens a file dialog.)"""
        with self.page.expect_file_chooser() as chooser:  # the button's own action: its file dialog
            self.evaluate("(id) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'upload').callback()",
                          node_id)
        accept = chooser.value.element.get_attribute("accept")
        with self.page.expect_response(lambda response: response.url.endswith("/upload/image")) as uploaded:
            chooser.value.set_files(str(path))
        saved = uploaded.value.json()
        name = f"{saved['subfolder']}/{saved['name']}" if saved.get("subfolder") else saved["name"]
        self.page.wait_for_function(
            "([id, name]) => app.graph.getNodeById(id).widgets.find((w) => w.name === 'video').value === name",
            arg=[node_id, name], timeout=30_000)
        return accept, self.widget_value(node_id, "video")
