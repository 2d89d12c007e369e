"""The README documents every node and each of its inputs (users look nodes up there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyui_text2video import NODE_CLASS_MAPPINGS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_the_readme_names_the_node_and_each_of_its_inputs(node_id):
    assert f"`{node_id}`" in README or f"**{node_id}**" in README, f"README: no section for {node_id}"
    declared = NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
    inputs = [*declared["required"], *declared.get("optional", {})]
    assert [name for name in inputs if f"`{name}`" not in README] == [], f"README: inputs of {node_id}"
