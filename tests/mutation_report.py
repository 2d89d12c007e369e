"""`make mutation`'s report: mutants per module, how many were checked and killed, and the survivors by name.

Reads `mutmut results --all True` (run in .mutation/ after `mutmut run`, as `make mutation` does); `mutmut show NAME` prints a
survivor's diff. Known equivalent survivors are explained in tests/MUTATION.md.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys


def results() -> list[tuple[str, str]]:
    """(mutant name, status) of every mutant mutmut has generated."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "True"], capture_output=True,
                         text=True, check=True).stdout
    return [(name, status) for name, status in re.findall(r"^\s*(\S+): (.+)$", out, re.M)]


def module_of(mutant: str) -> str:
    module = re.split(r"\.x_|\.xǁ", mutant, maxsplit=1)[0]
    return module.removeprefix("comfyui_text2video.")


def main() -> None:
    by_module = collections.defaultdict(collections.Counter)
    survivors = collections.defaultdict(list)
    for name, status in results():
        module = module_of(name)
        by_module[module][status] += 1
        if status not in ("killed", "not checked"):
            survivors[module].append(f"{name} ({status})")
    print(f"{'module':28} {'mutants':>8} {'checked':>8} {'killed':>7} {'survived':>9} {'other':>6}")
    for module in sorted(by_module):
        counts = by_module[module]
        total, killed, survived = sum(counts.values()), counts["killed"], counts["survived"]
        checked = total - counts["not checked"]
        print(f"{module:28} {total:8} {checked:8} {killed:7} {survived:9} {checked - killed - survived:6}")
    for module in sorted(survivors):
        print(f"\n{module} (survived, or timeout/suspicious/no tests):")
        print("\n".join(f"  {line}" for line in sorted(survivors[module])))


if __name__ == "__main__":
    main()
