"""Command line: `python -m comfyui_text2video run WORKFLOW.json ...`, `... batch ...` and `... nodes [--json]`."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import traceback
from pathlib import Path
from typing import Mapping

from .. import bridge
from .exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK
from .runner import NodeExecutionError, run_workflow
from .workflow import InvalidWorkflow, Override, WorkflowError, input_specs
from .workflow_file import read_workflow_file


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _device(text: str) -> str:
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, cpu, cuda or cuda:N")
    return text


def _override(text: str) -> Override:
    try:
        return Override.parse(text)
    except WorkflowError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comfyui_text2video",
                                     description="Run ComfyUI-Text2Video workflows without ComfyUI.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="validate and run a workflow (the editor's or the API format)",
                              description="Validate a workflow, run it, and print the written files as JSON. "
                                          "Exit status: 0 done, 1 a node failed, 2 invalid workflow, 130 interrupted.")
    _add_runner_flags(run)

    batch = commands.add_parser("batch", help="render a workflow once per job of a CSV or JSONL file",
                                description="Validate every job, render them (split across the processes of "
                                            "`accelerate launch`), record each in manifest.jsonl in the output "
                                            "folder and skip the recorded ones on a rerun. Exit status: 0 done, "
                                            "1 some job failed, 2 invalid jobs, 130 interrupted.")
    batch.add_argument("--jobs", type=Path, required=True,
                       help="CSV (header: NODE_ID.INPUT columns) or JSONL (one object of NODE_ID.INPUT keys a line)")
    _add_runner_flags(batch)

    nodes = commands.add_parser("nodes", help="describe the pack's nodes (what ComfyUI's /object_info says)")
    nodes.add_argument("--json", action="store_true", help="print the /object_info JSON")
    return parser


def _add_runner_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", type=Path,
                        help="workflow JSON file, or a video/png saved with its workflow (mp4, webm, webp, png)")
    parser.add_argument("--models-dir", type=Path, help="folder with diffusers/ and text2video/ model folders")
    parser.add_argument("--input-dir", type=Path, help="folder that input files are read from")
    parser.add_argument("--output-dir", type=Path, help="folder that outputs are written to")
    parser.add_argument("--set", dest="overrides", metavar="NODE_ID.INPUT=VALUE", type=_override, action="append",
                        default=[], help="override an input value (VALUE is read as JSON if it parses, else as "
                                         "text); repeatable")
    parser.add_argument("--device", type=_device, default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--cpu-offload", action="store_true",
                        help="keep the weights in CPU memory and move each layer to the GPU only while it runs (for "
                             "GPUs with little memory; slower)")
    parser.add_argument("--traceback", action="store_true", help="print the full traceback when a node fails")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "nodes":
        return _nodes_command(args.json)
    if args.command == "batch":
        from .batch import batch_command  # imports accelerate, which `run` does not need

        return batch_command(args)
    return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    try:
        workflow = read_workflow_file(args.workflow)
    except WorkflowError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    bridge.reset_folders()
    bridge.set_folders(models=args.models_dir, input=args.input_dir, output=args.output_dir)
    bridge.set_device(args.device)
    bridge.set_sequential_offload(args.cpu_offload)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON summary
            summary = run_workflow(workflow, args.overrides, on_node=lambda line: print(line, file=sys.stderr))
    except InvalidWorkflow as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"the workflow is invalid ({len(exc.problems)} problem(s)); nothing was run", file=sys.stderr)
        return EXIT_INVALID
    except WorkflowError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    except NodeExecutionError as exc:
        if args.traceback:
            traceback.print_exception(exc.__cause__ or exc, file=sys.stderr)
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:  # RunInterrupted names the node; earlier, there is none to name
        print(str(exc) or "interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps(summary, indent=2))
    return EXIT_OK


# --------------------------------------------------------------------------- nodes


def node_info(class_type: str, node_class: type, display_name: str | None = None) -> dict:
    """What ComfyUI's `/object_info` says about one classic-API node class."""
    input_types = node_class.INPUT_TYPES()
    return_types = list(node_class.RETURN_TYPES)
    info = {
        "input": input_types,
        "input_order": {section: list(inputs) for section, inputs in input_types.items()},
        "output": return_types,
        "output_is_list": list(getattr(node_class, "OUTPUT_IS_LIST", [False] * len(return_types))),
        "output_name": list(getattr(node_class, "RETURN_NAMES", return_types)),
        "name": class_type,
        "display_name": display_name or class_type,
        "description": getattr(node_class, "DESCRIPTION", ""),
        "python_module": f"custom_nodes.{Path(__file__).parent.name}",
        "category": getattr(node_class, "CATEGORY", "sd"),
        "output_node": getattr(node_class, "OUTPUT_NODE", False) is True,
    }
    for attribute, key in (("OUTPUT_TOOLTIPS", "output_tooltips"), ("DEPRECATED", "deprecated"),
                           ("EXPERIMENTAL", "experimental")):
        if getattr(node_class, attribute, None):
            info[key] = getattr(node_class, attribute)
    return info


def object_info(node_classes: Mapping[str, type] | None = None,
                display_names: Mapping[str, str] | None = None) -> dict:
    """`/object_info` for the pack's nodes (or the given classes)."""
    if node_classes is None:
        from .. import nodes

        node_classes, display_names = nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS
    display_names = display_names or {}
    return {class_type: node_info(class_type, node_class, display_names.get(class_type))
            for class_type, node_class in node_classes.items()}


def describe_node(info: dict) -> str:
    """A readable summary of one `node_info` entry: id, display name, inputs with types, outputs."""
    title = f"{info['name']}  \"{info['display_name']}\"  [{info['category']}]"
    lines = [title + ("  (output node)" if info["output_node"] else "")]
    for spec in input_specs(info["input"]).values():
        kind = spec.socket_type
        if spec.choices is not None or kind == "COMBO":
            kind = "one of " + (", ".join(map(str, spec.choices or [])) or "(nothing available yet)")
        details = [f"{key} {spec.options[key]!r}" for key in ("default", "min", "max") if key in spec.options]
        if not spec.required:
            details.insert(0, "optional")
        lines.append(f"    {spec.name}: {kind}" + (f"  ({', '.join(details)})" if details else ""))
    outputs = ", ".join(kind if name == kind else f"{name} {kind}"
                        for name, kind in zip(info["output_name"], info["output"]))
    lines.append(f"    -> {outputs or 'nothing'}")
    return "\n".join(lines)


def _nodes_command(as_json: bool) -> int:
    info = object_info()
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print("\n\n".join(describe_node(entry) for entry in info.values()))
    return EXIT_OK
