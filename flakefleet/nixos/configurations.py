"""nixos/configurations.json: every system of every stack, for the flake's `nixosConfigurations`.

The flake cannot read stacks/ (Pulumi config, YAML), so the specs flakefleet evaluates are
written to a checked-in JSON file the flake reads: `<stack>-<pool>` for a shared pool closure,
`<stack>-<pool>-<host>` for per-host closures. Then `nix build
./nixos#nixosConfigurations.dev-workers.config.system.build.toplevel` and `nixos-rebuild
build-vm --flake ./nixos#dev-cp` work as every NixOS user expects, and `nix flake check`
evaluates every one of them. The feature matrix (flakefleet/nixos/matrix.py) adds a
configuration for every module a stack can switch on, so the check covers what no stack uses yet.

One writer keeps it current: `scripts/nixos_configurations.py` (`make configurations`), from the
stack files. The signing key's public half, which each spec carries, is not in the stack files
(the key is a Pulumi secret): the script keeps the public keys the file already has. A test
fails when the file is stale, and the program, which reads the repository and never writes
into it, warns when its own stack's systems differ from the file's (public keys aside).
"""

from __future__ import annotations

import json
from pathlib import Path

from flakefleet.config import ConfigError, parse_stack_config
from flakefleet.config.stackfile import STACKS, read_stack_file, stack_names
from flakefleet.facts.flake import DEFAULT_FLAKE
from flakefleet.nixos import matrix
from flakefleet.plan.inventory import plan_inventory
from flakefleet.plan.schema import SCHEMA_PATH, schema_text, write_schema
from flakefleet.plan.specs import system_specs

FILE_NAME = "configurations.json"
DEFAULT_FILE = DEFAULT_FLAKE / FILE_NAME


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
            cfg = parse_stack_config(raw, raw.get("aws:region"), stacks_dir=stacks_dir)
        except ConfigError as err:
            raise ConfigError([f"stack {stack}: {p}" for p in err.problems]) from None
        for name, spec in stack_configurations(stack, stack_specs(stack, system_specs(cfg, plan_inventory(cfg)))).items():
            keys = existing.get(name, {}).get("trustedPublicKeys")
            entries[name] = {**spec, "trustedPublicKeys": keys} if keys and not spec["trustedPublicKeys"] else spec
    for row in matrix.ROWS:
        try:
            specs = matrix.row_specs(row, stacks_dir)
        except ConfigError as err:
            raise ConfigError([f"feature matrix row {row}: {p}" for p in err.problems]) from None
        entries.update(stack_configurations(matrix.PREFIX + row, stack_specs(matrix.PREFIX + row, specs)))
    return entries


def stack_specs(stack: str, specs: dict[str, dict]) -> dict[str, dict]:
    """The specs with the stack they belong to (so the program can replace exactly its own)."""
    return {key: {**spec, "stack": stack} for key, spec in specs.items()}


def stale_for(path: Path, stack: str, specs: dict[str, dict]) -> bool:
    """Whether the file at `path` lists `stack`'s systems otherwise than `specs` (the signing key's
    public half aside: only the program knows it). False when the flake keeps no such file (the
    test stand-in)."""
    if not path.is_file():
        return False
    def keyless(entries: dict[str, dict]) -> dict[str, dict]:
        return {n: {**e, "trustedPublicKeys": None} for n, e in entries.items() if e.get("stack") == stack}

    return keyless(read(path)) != keyless(stack_configurations(stack, stack_specs(stack, specs)))


def configure(parser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 2 when the file is stale (what `make configurations` would change)")
    parser.add_argument("--stacks-dir", type=Path, default=STACKS, metavar="DIR",
                        help="where the Pulumi.<stack>.yaml files are (default: stacks/)")


def run(args) -> int:
    from flakefleet.common.cli import DIFFERS, CommandError

    path = DEFAULT_FILE
    try:
        existing = read(path)
    except (ValueError, OSError) as err:
        raise CommandError(f"{path.name}: cannot be read ({err}); delete it and run `make configurations`") from None
    try:
        text = render(generate(args.stacks_dir, existing=existing))
    except ConfigError as err:
        raise CommandError(*err.problems) from None
    current = path.read_text() if path.is_file() else None
    schema_current = SCHEMA_PATH.is_file() and SCHEMA_PATH.read_text() == schema_text()
    if args.check:
        stale = [f"{p.parent.name}/{p.name}" for p, ok in ((SCHEMA_PATH, schema_current), (path, current == text))
                 if not ok]
        for name in stale:
            print(f"{name} is stale: run `make configurations`")
        if stale:
            return DIFFERS
        print(f"{path.parent.name}/{path.name} is current")
        return 0
    if write_schema():
        print(f"wrote {SCHEMA_PATH.parent.parent.name}/{SCHEMA_PATH.parent.name}/{SCHEMA_PATH.name}")
    if current != text:
        path.write_text(text)
    print(f"{'wrote' if current != text else 'unchanged:'} {path.parent.name}/{path.name} "
          f"({len(json.loads(text))} configurations)")
    return 0
