"""Small fake node classes (classic ComfyUI API) and a UI-workflow builder for the runner tests.

The fakes record every call in `CALLS`, so tests can see what ran, how often and with what.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from comfyui_text2video import bridge

CALLS: list[tuple[str, str, dict]] = []  # (class name, node id, keyword arguments)
SEED_MAX = 0xFFFFFFFFFFFFFFFF


class _Fake:
    FUNCTION = "run"
    CATEGORY = "tests"

    def run(self, unique_id, **inputs):
        CALLS.append((type(self).__name__, unique_id, inputs))
        return self.compute(**inputs)


def _inputs(required: dict, optional: dict | None = None, **hidden) -> dict:
    return {"required": required, "optional": optional or {}, "hidden": {"unique_id": "UNIQUE_ID", **hidden}}


class FakeLoader(_Fake):
    RETURN_TYPES = ("T2V_MODEL", "T2V_CLIP")
    RETURN_NAMES = ("model", "clip")

    @classmethod
    def INPUT_TYPES(cls):
        return _inputs({"model_name": (["tiny", "big"],), "dtype": (["auto", "float32"], {"default": "auto"})})

    def compute(self, model_name, dtype):
        return {"model": model_name, "dtype": dtype}, {"clip": model_name}


class FakeEncode(_Fake):
    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls):
        return _inputs({"clip": ("T2V_CLIP",), "text": ("STRING", {"multiline": True, "default": ""})})

    def compute(self, clip, text):
        return (f"cond:{text}",)


class FakeEmptyLatent(_Fake):
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return _inputs({"width": ("INT", {"default": 64, "min": 8, "max": 512, "step": 8}),
                        "frames": ("INT", {"default": 8, "min": 1, "max": 64})})

    def compute(self, width, frames):
        return ({"width": width, "frames": frames},)


class FakeSampler(_Fake):
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return _inputs({
            "model": ("T2V_MODEL",), "positive": ("CONDITIONING",), "latent": ("LATENT",),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 100}),
            "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 30.0}),
            "sampler_name": (["ddim", "euler"],),
        }, {"eta": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0})})

    def compute(self, **inputs):
        return ({"sampled": inputs},)


class FakePatch(_Fake):
    """A model patch whose model input is not its first input (for bypass matching)."""

    RETURN_TYPES = ("T2V_MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        return _inputs({"clip": ("T2V_CLIP",), "model": ("T2V_MODEL",)})

    def compute(self, clip, model):
        return ({**model, "patched": True},)


class FakeSave(_Fake):
    """Output node: writes one small file and lists it like ComfyUI's save nodes do."""

    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return _inputs({"samples": ("LATENT",), "filename_prefix": ("STRING", {"default": "video"})},
                       prompt="PROMPT", extra_pnginfo="EXTRA_PNGINFO")

    def compute(self, samples, filename_prefix, prompt, extra_pnginfo):
        folder = bridge.output_directory() / "fake"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{filename_prefix}_{len(list(folder.iterdir())):05d}.json"
        (folder / name).write_text(json.dumps(samples, default=str))
        return {"ui": {"videos": [{"filename": name, "subfolder": "fake", "type": "output"}],
                       "animated": [True]}}


class FakeFail(_Fake):
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return _inputs({"latent": ("LATENT",)})

    def compute(self, latent):
        raise ValueError("the fake node always fails")


class FakeSlowSave(_Fake):
    """Output node that works in many small steps, checking for interrupts between them.

    It touches `<output>/started` when it begins, and only writes its file if it ran to the end. A
    KeyboardInterrupt in the middle of a step (not from the interrupt check) leaves `<output>/torn`.
    """

    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return _inputs({"samples": ("LATENT",), "seconds": ("FLOAT", {"default": 30.0, "min": 0.0})})

    def compute(self, samples, seconds):
        output = Path(bridge.output_directory())
        output.mkdir(parents=True, exist_ok=True)
        (output / "started").touch()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            bridge.check_interrupt()
            try:
                time.sleep(0.01)
            except KeyboardInterrupt:
                (output / "torn").touch()
                raise
        (output / "slow.json").write_text("{}")
        return {"ui": {"gifs": [{"filename": "slow.json", "subfolder": "", "type": "output"}]}}


class FakeRangeChecker(_Fake):
    """Checks `steps` itself (VALIDATE_INPUTS names it), so the built-in min/max check is skipped."""

    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return _inputs({"latent": ("LATENT",), "steps": ("INT", {"default": 4, "min": 1, "max": 8})})

    @classmethod
    def VALIDATE_INPUTS(cls, steps):
        if steps % 2:
            return f"steps must be even, got {steps}"
        return True

    def compute(self, latent, steps):
        return ({**latent, "steps": steps},)


class FakeUpload(_Fake):
    """A loader whose file combo has an upload button (the editor saves one extra widget value)."""

    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls):
        return _inputs({"video": (["a.mp4", "b.mp4"], {"video_upload": True}),
                        "frame_limit": ("INT", {"default": 0, "min": 0})},
                       {"width": ("INT", {"default": 0, "min": 0})})

    def compute(self, video, frame_limit, width=0):
        return ({"video": video, "frame_limit": frame_limit, "width": width},)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    FakeLoader, FakeEncode, FakeEmptyLatent, FakeSampler, FakePatch, FakeSave, FakeFail, FakeSlowSave,
    FakeRangeChecker, FakeUpload)}
NODE_DISPLAY_NAME_MAPPINGS = {"FakeSampler": "Fake Sampler"}


def calls_of(class_name: str) -> list[tuple[str, dict]]:
    return [(node_id, inputs) for name, node_id, inputs in CALLS if name == class_name]


# --------------------------------------------------------------------------- workflows


class UiWorkflow:
    """Builds an editor-format workflow: nodes with typed sockets, links between them."""

    def __init__(self):
        self.nodes: dict[int, dict] = {}
        self.links: list[list] = []

    def node(self, node_id: int, node_type: str, widgets=None, inputs=(), outputs=(), mode: int = 0) -> dict:
        """`inputs`: (name, type) sockets, or (name, type, widget name) for a widget converted to an input."""
        slots = []
        for name, socket_type, *widget in inputs:
            slot = {"name": name, "type": socket_type, "link": None}
            if widget:
                slot["widget"] = {"name": widget[0]}
            slots.append(slot)
        node = {"id": node_id, "type": node_type, "pos": [0, 0], "size": [200, 100], "flags": {}, "order": 0,
                "mode": mode, "inputs": slots,
                "outputs": [{"name": t, "type": t, "links": [], "slot_index": i} for i, t in enumerate(outputs)],
                "properties": {"Node name for S&R": node_type}}
        if widgets is not None:
            node["widgets_values"] = widgets
        self.nodes[node_id] = node
        return node

    def link(self, origin_id: int, origin_slot: int, target_id: int, input_name: str) -> int:
        link_id = len(self.links) + 1
        target = self.nodes[target_id]
        target_slot = next(i for i, slot in enumerate(target["inputs"]) if slot["name"] == input_name)
        target["inputs"][target_slot]["link"] = link_id
        origin = self.nodes[origin_id]
        origin["outputs"][origin_slot]["links"].append(link_id)
        self.links.append([link_id, origin_id, origin_slot, target_id, target_slot,
                           origin["outputs"][origin_slot]["type"]])
        return link_id

    def build(self) -> dict:
        return {"last_node_id": max(self.nodes, default=0), "last_link_id": len(self.links),
                "nodes": list(self.nodes.values()), "links": self.links, "groups": [], "config": {},
                "extra": {}, "version": 0.4}


def standard_ui() -> UiWorkflow:
    """loader(1) -> encode(2); empty latent(3); sampler(4) <- 1, 2, 3; save(5) <- 4."""
    ui = UiWorkflow()
    ui.node(1, "FakeLoader", ["big", "float32"], outputs=["T2V_MODEL", "T2V_CLIP"])
    ui.node(2, "FakeEncode", ["a red fox"], inputs=[("clip", "T2V_CLIP")], outputs=["CONDITIONING"])
    ui.node(3, "FakeEmptyLatent", [128, 16], outputs=["LATENT"])
    ui.node(4, "FakeSampler", [42, "randomize", 30, 6.5, "euler", 0.25],
            inputs=[("model", "T2V_MODEL"), ("positive", "CONDITIONING"), ("latent", "LATENT")], outputs=["LATENT"])
    ui.node(5, "FakeSave", ["clip"], inputs=[("samples", "LATENT")])
    ui.link(1, 1, 2, "clip")
    ui.link(1, 0, 4, "model")
    ui.link(2, 0, 4, "positive")
    ui.link(3, 0, 4, "latent")
    ui.link(4, 0, 5, "samples")
    return ui


def standard_api() -> dict:
    """The API-format twin of `standard_ui()`."""
    return {
        "1": {"class_type": "FakeLoader", "inputs": {"model_name": "big", "dtype": "float32"}},
        "2": {"class_type": "FakeEncode", "inputs": {"clip": ["1", 1], "text": "a red fox"}},
        "3": {"class_type": "FakeEmptyLatent", "inputs": {"width": 128, "frames": 16}},
        "4": {"class_type": "FakeSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "latent": ["3", 0], "seed": 42, "steps": 30, "cfg": 6.5,
            "sampler_name": "euler", "eta": 0.25}},
        "5": {"class_type": "FakeSave", "inputs": {"samples": ["4", 0], "filename_prefix": "clip"}},
    }
