"""Write nixos/configurations.json (the flake's nixosConfigurations) from the stack files.

    python scripts/nixos_configurations.py           # rewrite nixos/configurations.json
    python scripts/nixos_configurations.py --check   # exit 1 when it is stale (a test runs this)
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flakefleet.nixos import configurations  # noqa: E402
from flakefleet.config import ConfigError  # noqa: E402


def main(argv: list[str]) -> int:
    path = configurations.DEFAULT_FILE
    try:
        text = configurations.render(configurations.generate(existing=configurations.read(path)))
    except ConfigError as err:
        print("cannot generate nixos/configurations.json:", *err.problems, sep="\n  ", file=sys.stderr)
        return 2
    if "--check" in argv:
        if not path.is_file() or path.read_text() != text:
            print("nixos/configurations.json is stale: run `make configurations`", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
