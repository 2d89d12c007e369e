"""Errors that tell the user which node and input are wrong and how to fix it."""

from __future__ import annotations

import torch


class NodeInputError(ValueError):
    """A bad input value: the message names the node, the input and the fix."""

    def __init__(self, node: str, input_name: str, problem: str):
        self.node = node
        self.input_name = input_name
        self.problem = problem
        super().__init__(f"{node}: input '{input_name}': {problem}")

    @staticmethod
    def parts(message: str, node: str) -> tuple[str, str] | None:
        """`(input name, problem)` of a message in this error's form for `node` (VALIDATE_INPUTS returns them)."""
        prefix = f"{node}: input '"
        if not message.startswith(prefix) or "': " not in message[len(prefix):]:
            return None
        input_name, _, problem = message[len(prefix):].partition("': ")
        return input_name, problem


class NodeOutOfMemory(torch.cuda.OutOfMemoryError):
    """The GPU ran out of memory in a node: the message names the node and the options that would fit.

    Still an out-of-memory error, so ComfyUI unloads its models as it does after any.
    """


class ModelLoadError(ValueError):
    """A model folder or file that the pack cannot or will not load."""
