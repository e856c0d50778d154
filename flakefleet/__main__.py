"""flakefleet: the command line of a Kubernetes fleet on NixOS (`flakefleet`, or `python -m flakefleet`).

    flakefleet plan --stack dev                  # validate a stack file, print every host's address
    flakefleet diff --stack dev                  # what a change does to each pool's NixOS system
    flakefleet status --stack dev                # per host: Ready, k3s, etcd, system, last delivery
    flakefleet drift --stack dev                 # hosts against what the stack wants
    flakefleet facts --stack dev --host H        # a machine's firmware, disks, NICs, GPUs (before install)
    flakefleet rollback --stack dev --host H     # back to the previous generation (or --pool P)
    flakefleet remove --stack dev --host H --force   # a dead host out of the cluster
    flakefleet dr list --stack dev               # etcd snapshots; also verify, pick
    flakefleet configurations [--check]          # nixos/configurations.json from the stack files

Commands that read a stack's state take the same pair: --stack S (its outputs read with the
Pulumi CLI) or --outputs FILE (written by `pulumi stack output --json`). Tables print as JSON
with --json. Exit codes, the same for every command: 0 done, nothing differs; 1 an error (one
line each); 2 something differs (diff: changes; status, drift: unhealthy or drifted); 3 a host or
the cluster could not be asked, or a step could not be done; 141 the output's reader went away.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from flakefleet.common.cli import ERROR, Parser, guard

# The commands: name -> (module with configure(parser) and run(args), one line of help). The
# one list: `flakefleet --help`, the parser and the docs' test read it.
COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("flakefleet.preview.plan", "validate a stack file and print every host's planned address"),
    "diff": ("flakefleet.preview.cli", "what a change does to each pool's NixOS system (exit 2: something changes)"),
    "status": ("flakefleet.ops.status", "the fleet in one table: Ready, k3s, etcd, system, last delivery"),
    "drift": ("flakefleet.ops.drift", "every host against what the stack wants"),
    "facts": ("flakefleet.ops.facts", "a bring-your-own machine before its install: firmware, disks, NICs, GPUs"),
    "rollback": ("flakefleet.ops.rollback", "hosts back to their previous generation"),
    "remove": ("flakefleet.ops.remove", "a dead host out of the cluster, forced"),
    "dr": ("flakefleet.ops.dr", "etcd snapshots: list, verify, pick"),
    "configurations": ("flakefleet.nixos.configurations", "write (or --check) nixos/configurations.json from the stack files"),
}

# The runners pulumi-command's Commands start (`./scripts/flakefleet deliver`, ...): name ->
# (module with main(), one line). Not in `--help`: they read their plan from the environment the
# program gives them. Their names are part of every registered Command: a new name is a change to
# every stack.
RUNNERS: dict[str, tuple[str, str]] = {
    "deliver": ("flakefleet.delivery.runner", "one host's delivery (create; --update; --remove)"),
    "cache": ("flakefleet.delivery.cache", "one pool's publish to the binary cache"),
    "kubeconfig": ("flakefleet.cluster.kubeconfig", "the admin kubeconfig"),
    "host-key": ("flakefleet.delivery.hostkey", "an EC2 host's SSH host key, checked against its console"),
    "install": ("flakefleet.bootstrap.runner", "NixOS onto a bring-your-own machine, once"),
}


def version() -> str:
    """flakefleet's version: the installed package's, else pyproject.toml's (a checkout)."""
    from importlib import metadata

    try:
        return metadata.version("flakefleet")
    except metadata.PackageNotFoundError:
        import tomllib
        from pathlib import Path

        try:
            with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
                return tomllib.load(f)["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


def parser(chosen: str | None = None) -> Parser:
    """The command line: every command, and the flags of the `chosen` one (from its module; the
    others' modules are not imported, so a command starts quickly)."""
    top = Parser(prog="flakefleet", description=__doc__.splitlines()[0].split(": ", 1)[1],
                 epilog="`flakefleet COMMAND --help` shows a command's flags. Exit codes: 0 done, nothing differs; "
                 "1 error; 2 something differs; 3 could not ask or do.")
    top.add_argument("--version", action="version", version=f"flakefleet {version()}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).configure(command)
        command.set_defaults(_module=module)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in RUNNERS:  # a Command's runner: its own arguments, read from sys.argv
        module, _ = RUNNERS[argv[0]]
        sys.argv = [f"flakefleet {argv[0]}", *argv[1:]]
        return guard(f"flakefleet {argv[0]}", importlib.import_module(module).main)

    def run() -> int:
        args = parser(next((a for a in argv if not a.startswith("-")), None)).parse_args(argv)
        return importlib.import_module(args._module).run(args)

    try:
        return guard(f"flakefleet {argv[0]}" if argv and argv[0] in COMMANDS else "flakefleet", run)
    except SystemExit as done:  # --help, --version, a usage error: argparse's own exit
        return done.code if isinstance(done.code, int) else ERROR


if __name__ == "__main__":
    sys.exit(main())
