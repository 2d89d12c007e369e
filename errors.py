"""Errors that tell the user which node and input are wrong and how to fix it."""

from __future__ import annotations


class NodeInputError(ValueError):
    """A bad input value: the message names the node, the input and the fix."""

    def __init__(self, node: str, input_name: str, problem: str):
        self.node = node
        self.input_name = input_name
        self.problem = problem
        super().__init__(f"{node}: input '{input_name}': {problem}")


class ModelLoadError(ValueError):
    """A model folder or file that the pack cannot or will not load."""
