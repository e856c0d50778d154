"""Where the flake that defines the nodes is, what it offers that config may name (pure I/O on
its directory; nothing evaluated), and where flakefleet keeps its caches.

The program, `plan` and the tests all resolve the flake the same way: FLAKEFLEET_FLAKE, else
`delivery.flake`, else `nixos/`, relative to the project.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLAKE = ROOT / "nixos"


def resolve_flake(configured: str | None, env: dict[str, str] | None = None) -> Path:
    """The flake directory: FLAKEFLEET_FLAKE, else `delivery.flake`, else nixos/; relative to the project."""
    env = os.environ if env is None else env
    chosen = env.get("FLAKEFLEET_FLAKE") or configured
    if not chosen:
        return DEFAULT_FLAKE
    path = Path(chosen)
    return (path if path.is_absolute() else ROOT / path).resolve()


def workload_names(flake: Path) -> list[str] | None:
    """The workloads the flake defines: one `workloads/<name>.nix` each (nixos/workloads/default.nix
    lists every file there; a test keeps the two alike). None when the flake has no such folder."""
    folder = flake / "workloads"
    if not folder.is_dir():
        return None
    return sorted(p.stem for p in folder.glob("*.nix") if p.name != "default.nix")


def disk_layouts(flake: Path) -> list[str] | None:
    """The disk layouts the flake offers bootstrapped hosts: one `disko/<name>.nix` each (disko
    configurations). None when the flake has no such folder."""
    folder = flake / "disko"
    if not folder.is_dir():
        return None
    return sorted(p.stem for p in folder.glob("*.nix"))


def layout_firmware(flake: Path, layout: str) -> str:
    """How the machines a layout is for boot (`uefi`, `bios`): what the layout file sets as
    `flakefleet.install.firmware` (nixos/mixins/install.nix; its default is uefi)."""
    try:
        text = (flake / "disko" / f"{layout}.nix").read_text()
    except OSError:
        return "uefi"
    found = re.search(r'flakefleet\.install\.firmware\s*=\s*"(uefi|bios)"', text)
    return found.group(1) if found else "uefi"


def nixpkgs_release(flake: Path) -> str | None:
    """The NixOS release the flake's lock pins (`nixos-26.05` -> `26.05`): its `nixpkgs` input's
    branch. None when that follows no release branch (unstable, a fork's branch) or there is no
    lock. (The offline test stand-in uses no nixpkgs; its lock names, in an unused node, the
    release of the flake it stands in for.)"""
    try:
        lock = json.loads((flake / "flake.lock").read_text())
        nodes = lock["nodes"]
        node = nodes[lock["root"]].get("inputs", {}).get("nixpkgs", "nixpkgs")
        ref = nodes[node]["original"].get("ref", "")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    match = re.fullmatch(r"nixos-(\d{2}\.\d{2})(-small)?", ref)
    return match.group(1) if match else None


def default_cache_dir() -> Path:
    """Where evaluated systems are cached: FLAKEFLEET_CACHE_DIR, else .cache/systems in the project
    (the binary cache's staging is its sibling)."""
    return Path(os.environ.get("FLAKEFLEET_CACHE_DIR") or ROOT / ".cache" / "systems")
