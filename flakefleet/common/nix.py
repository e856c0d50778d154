"""The `nix` command as flakefleet calls it: the experimental features it needs, and its version."""

from __future__ import annotations

import functools
import re
import subprocess

NIX_FEATURES = ["--extra-experimental-features", "nix-command flakes"]


def parse_nix_version(text: str) -> tuple[int, ...] | None:
    """`nix (Nix) 2.24.10` (or a vendor's `nix (Determinate Nix 3.6.2) 2.29.0`) -> (2, 24, 10)."""
    found = re.findall(r"\b(\d+)\.(\d+)(?:\.(\d+))?(?:[^\s]*)\s*$", text.strip())
    return tuple(int(p) for p in found[-1] if p) if found else None


@functools.lru_cache(maxsize=1)
def installed_nix_version() -> tuple[int, ...] | None:
    """The version of the `nix` on PATH (asked once per process)."""
    out = subprocess.run(["nix", "--version"], capture_output=True, text=True, timeout=60)
    return parse_nix_version(out.stdout)
