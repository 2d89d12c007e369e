"""Single-component model folders (a ControlNet, a motion adapter): found by the `_class_name` in their
`config.json` under their roots, listed by path relative to the root, and resolved by name without leaving it."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

from ..errors import ModelLoadError
from .builtin import BUILTIN_PREFIX


@dataclasses.dataclass(frozen=True)
class ComponentKind:
    noun: str  # in messages: "ControlNet", "motion adapter"
    class_name: str  # config.json's _class_name
    diffusers_name: str  # what users call such a folder: "ControlNet", "MotionAdapter"
    folder_phrase: str  # "the controlnet folder"
    relative_to: str  # "models/controlnet"
    roots: Callable[[], list[Path]]
    builtins: dict[str, str]  # built-in name -> the built-in model it fits
    build_builtin: Callable[[str], Path]  # built-in name -> its folder, built on first use

    def is_folder(self, folder: Path) -> bool:
        try:
            return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("_class_name") == \
                self.class_name
        except (OSError, ValueError):
            return False

    def available(self) -> list[str]:
        """The choices: the built-ins, then every folder of this kind by its path relative to its root."""
        found = set()
        for root in self.roots():
            for dirpath, dirnames, _files in os.walk(root, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                if self.is_folder(Path(dirpath)):
                    found.add(Path(dirpath).relative_to(root).as_posix())
                    dirnames.clear()
        return [BUILTIN_PREFIX + name for name in self.builtins] + sorted(found)

    def resolve(self, name: str) -> Path:
        if name.startswith(BUILTIN_PREFIX):
            builtin = name[len(BUILTIN_PREFIX):]
            if builtin not in self.builtins:
                raise ModelLoadError(f"unknown built-in {self.noun} '{name}'; built-ins are "
                                     f"{', '.join(BUILTIN_PREFIX + n for n in self.builtins)}")
            return self.build_builtin(builtin)
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts or Path(name).drive:
            raise ModelLoadError(f"{self.noun} name '{name}' points outside {self.folder_phrase}: use a path "
                                 f"relative to {self.relative_to}")
        for root in self.roots():
            if self.is_folder(root / name):
                return root / name
        folders = ", ".join(str(root) for root in self.roots())
        raise ModelLoadError(f"no {self.noun} named '{name}': put a diffusers {self.diffusers_name} folder "
                             f"(config.json with _class_name {self.class_name}, and its weights) into {folders}")
