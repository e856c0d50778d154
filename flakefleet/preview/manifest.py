"""One system condensed to what a reviewer reads: its packages, its systemd units, its boot files.

Read from the system's derivation graph alone (nothing is built):
- packages: every derivation with a version in its name (`openssl-3.0.14`), grouped by name,
  except fetches (fixed-output: sources, not packages) and NixOS' unit plumbing. It is the build
  graph, so build tools count too: a nixpkgs bump shows gcc as well as openssl.
- units: the `unit-<name>` derivations of the `system-units` derivation (nixpkgs'
  nixos/lib/systemd-lib.nix), each with what `switch-to-configuration` does when it changes:
  restart, reload (`X-ReloadIfChanged=true`), keep running (`X-RestartIfChanged=false`).
- boot: the kernel, initrd, modules and kernel parameters (`lib.boot` of the flake).
- links: the manifests and images it links into k3s' directories (`lib.k3sLinks` of the flake):
  one that goes away is pruned from the cluster after the switch (flakefleet/delivery/prune.py).

A manifest is small JSON; the program keeps each pool's in a stack output so the next preview
can say what changed since the last update without the old derivations.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from flakefleet.preview.derivations import Drv, base_name, closure, parse_drv_name, show

MANIFEST_SCHEMA = 1
BUILD_ID_LEN = 8  # characters of the derivation's store hash (40 bits): enough to tell two builds apart
UNIT_PREFIX = "unit-"
UNITS_DRV = "system-units"


@dataclass(frozen=True)
class Manifest:
    """system: build id of the system itself; packages: name -> version -> build id; units:
    name -> (build id, on change); boot: the boot files (None when the flake does not say);
    derivations: how many it is built from (fetches not counted); links: "manifests" and
    "images" -> the file names it links into k3s' directories (None when the flake does not say)."""

    system: str = ""
    packages: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    units: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    boot: Mapping[str, str] | None = None
    derivations: int = 0
    links: Mapping[str, tuple[str, ...]] | None = None

    def to_json(self) -> dict:
        return {"schema": MANIFEST_SCHEMA, "system": self.system, "packages": self.packages,
                "units": {n: list(u) for n, u in self.units.items()}, "boot": self.boot,
                "derivations": self.derivations,
                "links": {k: list(v) for k, v in self.links.items()} if self.links is not None else None}

    @classmethod
    def from_json(cls, data: Mapping) -> Manifest:
        return cls(system=data.get("system") or "", packages=data.get("packages") or {}, units={n: tuple(u) for n, u in (data.get("units") or {}).items()},
                   boot=data.get("boot"), derivations=data.get("derivations") or 0, links=links_of(data.get("links")))

    def pack(self) -> str:
        """Compact text for a stack output (a preview shows one changed string, not every package)."""
        raw = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return "z1:" + base64.b64encode(zlib.compress(raw, 9)).decode()

    @classmethod
    def unpack(cls, text: str) -> Manifest | None:
        """The manifest `pack` wrote, or None for anything else (an older output, a damaged one)."""
        if not isinstance(text, str) or not text.startswith("z1:"):
            return None
        try:
            data = json.loads(zlib.decompress(base64.b64decode(text[3:])))
        except (ValueError, zlib.error):
            return None
        return cls.from_json(data) if data.get("schema") == MANIFEST_SCHEMA else None


def links_of(data) -> dict[str, tuple[str, ...]] | None:
    """The `links` of a manifest's JSON or of an evaluated system (None: not said)."""
    if not isinstance(data, Mapping):
        return None
    return {kind: tuple(sorted(str(n) for n in data.get(kind) or ())) for kind in ("manifests", "images")}


def on_change(name: str, text: str | None) -> str:
    """What switching to a system with this unit changed does to it (NixOS' switch-to-configuration)."""
    text = text or ""
    if not name.endswith(".service"):
        return "restart" if name.endswith((".socket", ".timer", ".path")) else "change"
    if "X-ReloadIfChanged=true" in text:
        return "reload"
    if "X-RestartIfChanged=false" in text:
        return "keep"
    return "restart"


def units_of(drvs: list[Drv]) -> dict[str, tuple[str, str]]:
    """The system's units: the `unit-*` inputs of `system-units` (all `unit-*` if there is none)."""
    by_path = {d.path: d for d in drvs}
    holders = [d for d in drvs if d.name == UNITS_DRV]
    candidates = [by_path[p] for h in holders for p in h.inputs if p in by_path] if holders else drvs
    units = {}
    for drv in candidates:
        if drv.name.startswith(UNIT_PREFIX) and not drv.name.endswith("-disabled"):
            name = drv.name[len(UNIT_PREFIX):]
            units[name] = (drv.hash[:BUILD_ID_LEN], on_change(name, drv.text))
    return units


def packages_of(drvs: list[Drv]) -> dict[str, dict[str, str]]:
    """name -> version -> build id, of every versioned, not fixed-output, non-unit derivation."""
    packages: dict[str, dict[str, str]] = {}
    for drv in drvs:
        if drv.fixed or drv.name.startswith(UNIT_PREFIX):
            continue
        name, version = parse_drv_name(drv.name)
        if version:
            packages.setdefault(name, {})[version] = drv.hash[:BUILD_ID_LEN]
    return {name: dict(sorted(versions.items())) for name, versions in sorted(packages.items())}


def manifest_of(graph: Mapping[str, Drv], drv: str, boot: Mapping[str, str] | None = None) -> Manifest:
    """The manifest of the system whose derivation is `drv`, from a graph that holds its closure."""
    drvs = closure(graph, drv)
    return Manifest(system=base_name(drv).split("-", 1)[0][:BUILD_ID_LEN], packages=packages_of(drvs), units=units_of(drvs), boot=dict(boot) if boot else None,
                    derivations=sum(1 for d in drvs if not d.fixed))


def manifests(systems: Mapping, cache_dir: Path) -> dict[str, Manifest]:
    """System name -> manifest, for evaluated systems (flakefleet.nixos.evaluate.System); one
    `nix derivation show` for every derivation not seen before (kept in `cache_dir`, by the
    derivation's store path: the same derivation always has the same manifest); the links in
    k3s' directories come from the evaluation (a cache entry older than them has none)."""
    found: dict[str, Manifest] = {}
    entry = {name: cache_dir / f"manifest-{base_name(s.drv)}.json" for name, s in systems.items()}
    for name, path in entry.items():
        if path.is_file():
            found[name] = replace(Manifest.from_json(json.loads(path.read_text())), links=links_of(systems[name].links))
    todo = {name: s for name, s in systems.items() if name not in found}
    if todo:
        graph = show(sorted({s.drv for s in todo.values()}))
        cache_dir.mkdir(parents=True, exist_ok=True)
        for name, system in todo.items():
            found[name] = replace(manifest_of(graph, system.drv, system.boot), links=links_of(system.links))
            entry[name].write_text(json.dumps(found[name].to_json(), sort_keys=True))
    return found
