"""Run a validated workflow headless: the nodes the output nodes need, each once, in dependency order."""

from __future__ import annotations

import collections
import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .. import bridge
from .workflow import InvalidWorkflow, NodeSpec, Override, PreparedWorkflow, prepare_workflow, unwrap_value

FILE_LISTS = ("images", "gifs", "videos")
"""Keys of an output node's `ui` dict that list written files ({filename, subfolder, type})."""


class NodeExecutionError(RuntimeError):
    """A node raised while running; the message names the node."""

    def __init__(self, node_id: str, class_type: str, message: str):
        self.node_id = node_id
        self.class_type = class_type
        super().__init__(f"node {node_id} ({class_type}) failed: {message}")


class RunInterrupted(KeyboardInterrupt):
    """The user stopped the run (Ctrl-C); `node_id` is the node that was running or about to run."""

    def __init__(self, node_id: str, class_type: str):
        self.node_id = node_id
        self.class_type = class_type
        super().__init__(f"interrupted at node {node_id} ({class_type})")


def run_workflow(workflow: Any, overrides: Iterable[Override | str] = (),
                 node_classes: Mapping[str, type] | None = None,
                 on_node: Callable[[str], None] | None = None) -> dict:
    """Validate and run a workflow (either format); returns `{"outputs": [{"node", "files"}]}`.

    `overrides` are `Override`s or `"NODE_ID.INPUT=VALUE"` strings; `node_classes` defaults to the
    pack's nodes; `on_node` receives one line per node as it starts. Raises `InvalidWorkflow` (nothing
    ran), `NodeExecutionError` or `RunInterrupted`.
    """
    prepared = prepare_workflow(workflow, overrides, node_classes)
    if prepared.problems:
        raise InvalidWorkflow(prepared.problems)
    return execute(prepared, on_node)


def execute(prepared: PreparedWorkflow, on_node: Callable[[str], None] | None = None) -> dict:
    """Run a prepared workflow that has no problems; see `run_workflow`.

    A node's outputs are dropped as soon as its last consumer has run, so long videos (IMAGE
    frames) do not pile up in memory along the graph.
    """
    results: dict[str, tuple] = {}
    pending_consumers = collections.Counter(source for node_id in prepared.order
                                            for source in _sources(prepared.prompt[node_id]))
    outputs = []
    with _interrupt_on_sigint():
        for position, node_id in enumerate(prepared.order, 1):
            node = prepared.prompt[node_id]
            spec = prepared.specs.get(node["class_type"])
            if on_node is not None:
                on_node(f"[{position}/{len(prepared.order)}] node {node_id} ({spec.class_type})")
            arguments = _call_arguments(node_id, node, spec, prepared, results)
            try:
                bridge.check_interrupt()
                returned = getattr(spec.node_class(), spec.function)(**arguments)
            except KeyboardInterrupt:
                raise RunInterrupted(node_id, spec.class_type) from None
            except Exception as exc:
                raise NodeExecutionError(node_id, spec.class_type, _describe(exc)) from exc
            results[node_id], ui = _split_returned(node_id, spec, returned)
            del arguments, returned
            for source in _sources(node):
                pending_consumers[source] -= 1
                if not pending_consumers[source]:
                    del results[source]
            if spec.is_output:
                outputs.append({"node": node_id, "files": written_files(ui)})
    return {"outputs": outputs}


def _sources(node: dict) -> list[str]:
    """The node ids a node's inputs are linked to, once per link."""
    return [value[0] for value in node["inputs"].values() if isinstance(value, list)]


def _call_arguments(node_id: str, node: dict, spec: NodeSpec, prepared: PreparedWorkflow,
                    results: dict[str, tuple]) -> dict:
    arguments = {}
    for name, value in node["inputs"].items():
        if isinstance(value, list):
            source_id, output_index = value
            arguments[name] = results[source_id][output_index]
        else:
            arguments[name] = unwrap_value(value)
    hidden_values = {"PROMPT": prepared.prompt, "EXTRA_PNGINFO": {"workflow": prepared.ui_workflow},
                     "UNIQUE_ID": node_id}
    for name, kind in spec.hidden.items():
        if kind in hidden_values:
            arguments[name] = hidden_values[kind]
    return arguments


def _split_returned(node_id: str, spec: NodeSpec, returned: Any) -> tuple[tuple, dict]:
    """(outputs, ui) from what a node function returned: a tuple, or {"ui": ..., "result": ...}."""
    ui = {}
    if isinstance(returned, dict):
        ui = returned.get("ui") or {}
        returned = returned.get("result", ())
    if returned is None:
        returned = ()
    if not isinstance(returned, (tuple, list)) or len(returned) != len(spec.return_types):
        count = len(returned) if isinstance(returned, (tuple, list)) else f"a {type(returned).__name__}"
        raise NodeExecutionError(node_id, spec.class_type, f"returned {count} value(s), but RETURN_TYPES "
                                 f"declares {len(spec.return_types)}")
    return tuple(returned), ui


def written_files(ui: Mapping) -> list[str]:
    """Absolute paths of the output-folder files an output node's `ui` dict lists."""
    output_dir = Path(bridge.output_directory()).resolve()
    return [str(output_dir / entry.get("subfolder", "") / entry["filename"])
            for key in FILE_LISTS for entry in ui.get(key) or []
            if isinstance(entry, Mapping) and "filename" in entry and entry.get("type", "output") == "output"]


def _describe(exc: BaseException) -> str:
    """The pack's own errors (ValueError, OSError) speak for themselves; others get their type named."""
    if isinstance(exc, (ValueError, OSError)) and str(exc):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@contextlib.contextmanager
def _interrupt_on_sigint():
    """Ctrl-C asks the running node to stop at its next step; a second Ctrl-C stops at once, and
    further ones are ignored so that they cannot cut short the clean-up on the way out (partial files,
    patches). Only in the main thread (where Python delivers signals); the previous handler comes back afterwards.
    """
    bridge.clear_interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    presses = 0

    def request_stop(signum, frame):
        nonlocal presses
        presses += 1
        if presses > 1:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise KeyboardInterrupt
        bridge.request_interrupt()
        print("\nstopping after the current step (press Ctrl-C again to stop at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        bridge.clear_interrupt()
