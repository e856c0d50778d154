"""Derivation graphs as `nix derivation show -r` prints them, in every JSON shape Nix has used.

Nix has changed this experimental format several times: full store paths and `inputDrvs` lists
(up to 2.17), `inputDrvs` as `{outputs, dynamicOutputs}` (2.18), base names and a `name` field
(format 3, Nix 2.32), the graph wrapped in `{"derivations": ..., "version": 4}` with
`inputs.drvs` / `inputs.srcs` (format 4, Nix 2.33), environment values that may be objects
(format 5). `read_show` accepts all of them; the rest of flakefleet sees `Drv` only.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flakefleet.common.nix import NIX_FEATURES, installed_nix_version

SHOW_TIMEOUT_S = 600
# `nix show-derivation` became `nix derivation show` in Nix 2.15.
DERIVATION_SHOW_SINCE = (2, 15)


@dataclass(frozen=True)
class Drv:
    """One derivation: its store base name (`<hash>-<name>.drv`), name, input derivations
    (base names), whether it is fixed-output (a fetch: its output is known by hash), and its
    `text` (a systemd unit's file, in NixOS' `unit-*` derivations), if any."""

    path: str
    name: str
    inputs: tuple[str, ...]
    fixed: bool
    text: str | None = None

    @property
    def hash(self) -> str:
        """The store hash of the derivation: changes with anything it is built from."""
        return self.path.split("-", 1)[0]


def base_name(path: str) -> str:
    """`/nix/store/abc-foo.drv` (or `abc-foo.drv`) -> `abc-foo.drv`."""
    return path.rsplit("/", 1)[-1]


def parse_drv_name(name: str) -> tuple[str, str]:
    """(name, version) as Nix's `builtins.parseDrvName` splits them: the version starts after
    the first dash that is followed by something other than a letter."""
    for i, char in enumerate(name[:-1]):
        if char == "-" and not name[i + 1].isalpha():
            return name[:i], name[i + 1 :]
    return name, ""


def _env_value(value) -> str | None:
    if isinstance(value, dict):  # format 5: {"value": ..., "passAsFile": ...}
        value = value.get("value")
    return value if isinstance(value, str) else None


def _drv(path: str, body: Mapping) -> Drv:
    env = body.get("env") or {}
    inputs = body.get("inputDrvs")
    if inputs is None:
        inputs = (body.get("inputs") or {}).get("drvs") or {}
    name = body.get("name") or _env_value(env.get("name")) or path[33:].removesuffix(".drv")
    fixed = any(isinstance(out, dict) and out.get("hash") for out in (body.get("outputs") or {}).values())
    return Drv(
        path=path,
        name=name,
        inputs=tuple(sorted(base_name(p) for p in inputs)),
        fixed=fixed,
        text=_env_value(env.get("text")),
    )


def read_show(document: Mapping) -> dict[str, Drv]:
    """Base name -> Drv, from the parsed output of `nix derivation show` (any format)."""
    graph = document.get("derivations") if isinstance(document.get("derivations"), dict) else document
    return {base_name(path): _drv(base_name(path), body) for path, body in graph.items()}


def closure(graph: Mapping[str, Drv], root: str) -> list[Drv]:
    """Every derivation `root` is built from (itself included) that the graph holds."""
    seen, todo = set(), [base_name(root)]
    while todo:
        path = todo.pop()
        if path in seen or path not in graph:
            continue
        seen.add(path)
        todo.extend(graph[path].inputs)
    return [graph[p] for p in sorted(seen)]


def show_argv(drvs: Iterable[str], version: tuple[int, ...] | None) -> list[str]:
    """The command that prints the whole derivation graph of `drvs`, for the installed Nix."""
    command = ["derivation", "show"] if version is None or version >= DERIVATION_SHOW_SINCE else ["show-derivation"]
    return ["nix", *NIX_FEATURES, *command, "--recursive", *drvs]


class ShowError(Exception):
    """`nix derivation show` failed (a derivation missing from the store, say): Nix's message."""


def show(drvs: Iterable[str]) -> dict[str, Drv]:
    """The derivation graph of `drvs` (full store paths of derivations in the local store)."""
    drvs = list(drvs)
    if not drvs:
        return {}
    proc = subprocess.run(show_argv(drvs, installed_nix_version()), capture_output=True, text=True,
                          timeout=SHOW_TIMEOUT_S)
    if proc.returncode != 0:
        raise ShowError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    return read_show(json.loads(proc.stdout))
