"""Lay out the UI example workflows as the editor draws them, and write their template thumbnails.

    COMFYUI_DIR=... COMFYUI_PYTHON=... python tests/browser/lay_out_examples.py [NAME ...]

For each example (all, or the NAMEs given): drop it on a real editor, give every node the size the editor
computes for it (a save node keeps room for its preview), place the nodes in columns by execution order,
save the workflow back as the editor serialises it and write `example_workflows/NAME.jpg` (the template
browser's thumbnail) from a screenshot of the fitted canvas. A developer tool, not a test.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE))

from comfy_harness import ComfyServer, comfyui_paths, install_pack  # noqa: E402
from conftest import chromium_path  # noqa: E402
from editor import Editor  # noqa: E402

EXAMPLES = HERE.parents[1] / "example_workflows"
THUMBNAIL_SIZE = (512, 384)
PREVIEW_ROOM = (305, 382)
"""Width and height a save node gets, so its video preview shows without resizing."""
COLUMN_GAP, ROW_GAP, MARGIN = 50, 40, 40

_LAY_OUT = """(arguments) => {
  const [previewWidth, previewHeight, columnGap, rowGap, margin] = arguments;
  const graph = app.graph;
  const depth = new Map();
  const depthOf = (node) => {
    if (depth.has(node.id)) return depth.get(node.id);
    depth.set(node.id, 0);
    let deepest = 0;
    for (const input of node.inputs || []) {
      const link = input.link != null ? graph.links[input.link] ?? graph.links.get?.(input.link) : null;
      if (link) deepest = Math.max(deepest, depthOf(graph.getNodeById(link.origin_id)) + 1);
    }
    depth.set(node.id, deepest);
    return deepest;
  };
  const columns = [];
  for (const node of [...graph.nodes].sort((a, b) => a.id - b.id)) {
    const size = node.computeSize();
    if (node.type === 'T2VSaveVideo' || node.type === 'SaveVideo') {
      size[0] = Math.max(size[0], previewWidth); size[1] = Math.max(size[1], previewHeight);
    }
    node.setSize([Math.round(size[0]), Math.round(size[1])]);
    (columns[depthOf(node)] ||= []).push(node);
  }
  let x = margin;
  for (const column of columns.filter(Boolean)) {
    let y = margin + LiteGraph.NODE_TITLE_HEIGHT;
    for (const node of column) { node.pos = [x, y]; y += node.size[1] + LiteGraph.NODE_TITLE_HEIGHT + rowGap; }
    x += Math.max(...column.map((node) => node.size[0])) + columnGap;
  }
  graph.setDirtyCanvas(true, true);
  app.canvas.ds.offset = [0, 0];
}"""


_GRAPH_SIZE = """() => [
  Math.max(...app.graph.nodes.map((n) => n.pos[0] + n.size[0])),
  Math.max(...app.graph.nodes.map((n) => n.pos[1] + n.size[1]))]"""
_GRAPH_ON_SCREEN = """(aspect) => {
  const canvas = app.canvas.canvas.getBoundingClientRect();
  const [left, top] = app.canvas.ds.convertOffsetToCanvas([
    Math.min(...app.graph.nodes.map((n) => n.pos[0])) - 20,
    Math.min(...app.graph.nodes.map((n) => n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT)) - 20]);
  const [right, bottom] = app.canvas.ds.convertOffsetToCanvas([
    Math.max(...app.graph.nodes.map((n) => n.pos[0] + n.size[0])) + 20,
    Math.max(...app.graph.nodes.map((n) => n.pos[1] + n.size[1])) + 20]);
  let width = right - left, height = bottom - top;
  if (width / height < aspect) width = height * aspect; else height = width / aspect;
  const x = (left + right - width) / 2, y = (top + bottom - height) / 2;
  return {x: canvas.left + x, y: canvas.top + y, width, height};
}"""
"""The page rectangle showing the whole graph (drawn at full scale, so with its text), widened to the
thumbnail's aspect ratio."""


def lay_out(editor: Editor, example: Path) -> None:
    from PIL import Image

    workflow = json.loads(example.read_text())
    editor.drop_workflow(example, [node["type"] for node in workflow["nodes"]])
    editor.evaluate(_LAY_OUT, [*PREVIEW_ROOM, COLUMN_GAP, ROW_GAP, MARGIN])
    width, height = editor.evaluate(_GRAPH_SIZE)
    aspect = THUMBNAIL_SIZE[0] / THUMBNAIL_SIZE[1]
    width, height = max(width, height * aspect), max(height, width / aspect)
    pad = 300  # keeps the tabs, the minimap and the zoom controls at the canvas edges out of the picture
    editor.page.set_viewport_size({"width": int(width) + 2 * pad, "height": int(height) + 2 * pad})
    editor.evaluate("(pad) => { app.canvas.ds.scale = 1; app.canvas.ds.offset = [pad, pad];"
                    " app.graph.setDirtyCanvas(true, true); }", pad)
    editor.page.wait_for_timeout(500)
    clip = editor.evaluate(_GRAPH_ON_SCREEN, THUMBNAIL_SIZE[0] / THUMBNAIL_SIZE[1])
    laid_out = editor.graph()
    laid_out["extra"] = workflow.get("extra", {})
    example.write_text(json.dumps(laid_out, indent=1) + "\n")
    shot = Image.open(io.BytesIO(editor.page.screenshot(clip=clip))).convert("RGB")
    shot.resize(THUMBNAIL_SIZE, Image.LANCZOS).save(example.with_suffix(".jpg"), quality=85)
    print(f"{example.name}: {len(laid_out['nodes'])} nodes laid out, thumbnail written")


def main(names: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    paths = comfyui_paths()
    if isinstance(paths, str):
        print(paths, file=sys.stderr)
        return 2
    examples = [EXAMPLES / f"{name}.json" for name in names] or sorted(EXAMPLES.glob("*.json"))
    base = Path(tempfile.mkdtemp(prefix="t2v-layout-"))
    install_pack(base / "custom_nodes")
    for folder in ("input", "output"):
        (base / folder).mkdir()
    server = ComfyServer(*paths, base)
    server.start()
    try:
        server.wait_ready()
        server.post("/settings/Comfy.TutorialCompleted", True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            editor = Editor(page, server, base, "layout")
            editor.open()
            for example in examples:
                lay_out(editor, example)
            browser.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
