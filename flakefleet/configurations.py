"""nixos/configurations.json: every system of every stack, for the flake's `nixosConfigurations`.

The flake cannot read stacks/ (Pulumi config, YAML), so the specs flakefleet evaluates are
written to a checked-in JSON file the flake reads: `<stack>-<pool>` for a shared pool closure,
`<stack>-<pool>-<host>` for per-host closures. Then `nix build
./nixos#nixosConfigurations.dev-workers.config.system.build.toplevel` and `nixos-rebuild
build-vm --flake ./nixos#dev-cp` work as every NixOS user expects, and `nix flake check`
evaluates every one of them.

Two writers keep it current: `scripts/nixos_configurations.py` (`make configurations`) from the
stack files, and the program for its own stack while it runs (it alone knows the signing key,
whose public half is in each spec; the script keeps the public keys the file already has).
A test fails when the file is stale.
"""

from __future__ import annotations

import json
from pathlib import Path

from flakefleet.config import ConfigError, parse_stack_config
from flakefleet.inventory import plan_inventory
from flakefleet.nixos import system_specs
from flakefleet.stackfile import STACKS, read_stack_file, stack_names

FILE_NAME = "configurations.json"
DEFAULT_FILE = Path(__file__).resolve().parent.parent / "nixos" / FILE_NAME


def configuration_name(stack: str, system_key: str) -> str:
    """`dev` + `workers` -> `dev-workers`; per-host `workers/worker-0` -> `dev-workers-worker-0`."""
    return f"{stack}-{system_key.replace('/', '-')}"


def stack_configurations(stack: str, specs: dict[str, dict]) -> dict[str, dict]:
    """One stack's entries: configuration name -> spec."""
    return {configuration_name(stack, key): spec for key, spec in specs.items()}


def read(path: Path = DEFAULT_FILE) -> dict[str, dict]:
    """The file's entries, or none when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else {}


def render(entries: dict[str, dict]) -> str:
    """The file's text: sorted, stable, one trailing newline (reviewable diffs)."""
    return json.dumps(dict(sorted(entries.items())), indent=2, sort_keys=True) + "\n"


def with_stack(entries: dict[str, dict], stack: str, mine: dict[str, dict]) -> dict[str, dict]:
    """`entries` with every configuration of `stack` replaced by `mine`."""
    others = {name: spec for name, spec in entries.items() if spec.get("stack") != stack}
    return {**others, **mine}


def generate(stacks_dir: Path = STACKS, existing: dict[str, dict] | None = None) -> dict[str, dict]:
    """Every stack's entries from its stack file; public keys the file already had are kept."""
    existing = existing or {}
    entries: dict[str, dict] = {}
    for stack in stack_names(stacks_dir):
        raw = read_stack_file(stack, stacks_dir)
        try:
            cfg = parse_stack_config(raw, raw.get("aws:region"))
        except ConfigError as err:
            raise ConfigError([f"stack {stack}: {p}" for p in err.problems]) from None
        for name, spec in stack_configurations(stack, stack_specs(stack, system_specs(cfg, plan_inventory(cfg)))).items():
            keys = existing.get(name, {}).get("trusted_public_keys")
            entries[name] = {**spec, "trusted_public_keys": keys} if keys and not spec["trusted_public_keys"] else spec
    return entries


def stack_specs(stack: str, specs: dict[str, dict]) -> dict[str, dict]:
    """The specs with the stack they belong to (so the program can replace exactly its own)."""
    return {key: {**spec, "stack": stack} for key, spec in specs.items()}


def update_stack(path: Path, stack: str, specs: dict[str, dict]) -> bool:
    """Rewrite `stack`'s entries of the file at `path` (program side); True when it changed.
    A flake without the file does not keep one (the test stand-in): nothing is written."""
    if not path.is_file():
        return False
    entries = read(path)
    updated = with_stack(entries, stack, stack_configurations(stack, stack_specs(stack, specs)))
    text = render(updated)
    if text == path.read_text():
        return False
    path.write_text(text)
    return True
