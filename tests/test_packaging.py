"""`pyproject.toml` ships the whole pack: a `pip install .` (not only an editable one, or a clone into ComfyUI's
custom_nodes) gets every module and every file the pack reads at run time."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11+")

ROOT = Path(__file__).resolve().parent.parent
NOT_SHIPPED = {"tests", "benchmarks", "build", "docs"}
"""Top-level folders a user's install does not need (besides hidden ones, such as `.venv`)."""
DEVELOPMENT_ONLY = {ROOT / "models" / "micro" / "training_log.jsonl"}
"""Read by the training tool only."""


def shipped_files() -> set[Path]:
    """The files a wheel built from `pyproject.toml` holds: each listed package's modules and package data."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    files = set()
    for package in setuptools["packages"]:
        folder = ROOT.joinpath(*package.split(".")[1:])
        files.update(folder.glob("*.py"))
        for pattern in setuptools.get("package-data", {}).get(package, []):
            files.update(folder.glob(pattern))
    return files


def pack_files() -> set[Path]:
    """The modules and data files of the pack's source tree, without caches, hidden files and development-only
    folders (which are not walked)."""
    files = set(ROOT.glob("*.py"))
    for top in ROOT.iterdir():
        if top.is_dir() and top.name not in NOT_SHIPPED and not top.name.startswith(".") \
                and not top.name.endswith(".egg-info"):
            files.update(path for path in top.rglob("*") if path.is_file() and not any(
                part.startswith(".") or part == "__pycache__" for part in path.relative_to(ROOT).parts))
    return files - DEVELOPMENT_ONLY


def test_every_module_and_data_file_is_in_a_listed_package():
    missing = sorted(str(path.relative_to(ROOT)) for path in pack_files() - shipped_files())
    assert not missing, f"pyproject.toml's packages/package-data leave out: {missing}"


def test_the_micro_weights_and_editor_extension_are_shipped():
    shipped = {str(path.relative_to(ROOT)) for path in shipped_files()}
    assert {"models/micro/unet3d/diffusion_pytorch_model.safetensors", "web/preview.js",
            "example_workflows/api/text2video.json", "models/families/sd.py"} <= shipped
