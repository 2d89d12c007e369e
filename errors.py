"""Errors that tell the user which node and input are wrong and how to fix it."""

from __future__ import annotations


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


class ModelLoadError(ValueError):
    """A model folder or file that the pack cannot or will not load."""
