"""Which stacks a change touches, as a JSON list for a GitHub Actions matrix.

    python3 scripts/touched_stacks.py BASE_REF      # e.g. origin/main; prints stacks=[...]

A change to stacks/Pulumi.<s>.yaml touches stack <s>; a change to the program, the components,
the core or the flake touches every stack; docs, tests, benchmarks and CI files touch none.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACK_FILE = re.compile(r"^stacks/Pulumi\.([A-Za-z0-9_.-]+)\.yaml$")
NO_EFFECT = ("docs/", "tests/", "bench/", ".github/", ".ci/", "README.md", "DEVELOPERS.md", ".gitignore")


def touched(changed: list[str], stacks: list[str]) -> list[str]:
    """The stacks whose preview can differ after a change to these paths (pure)."""
    hit: set[str] = set()
    for path in changed:
        if m := STACK_FILE.match(path):
            hit.add(m.group(1))
        elif not path.startswith(NO_EFFECT):
            return sorted(stacks)
    return sorted(s for s in hit if s in stacks)


def main(argv: list[str]) -> int:
    base = argv[0] if argv else "origin/main"
    changed = subprocess.run(["git", "diff", "--name-only", f"{base}...HEAD"], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout.split()
    stacks = sorted(p.name.split(".")[1] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))
    print(f"stacks={json.dumps(touched(changed, stacks))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
