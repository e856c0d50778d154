"""Write nixos/configurations.json (the flake's nixosConfigurations) from the stack files.

    python scripts/nixos_configurations.py           # rewrite nixos/configurations.json
    python scripts/nixos_configurations.py --check   # exit 2 when it is stale (a test runs this)

The same as `flakefleet configurations` (flakefleet/nixos/configurations.py); `make configurations` runs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flakefleet.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["configurations", *sys.argv[1:]]))
