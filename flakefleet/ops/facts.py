"""`flakefleet facts`: what a bring-your-own machine is, read over its pinned SSH key before it
is installed: how it boots (UEFI or BIOS), its architecture, its disks by their stable names with
sizes, its interfaces with MACs, link state, addresses and default routes, and its NVIDIA GPUs.

    flakefleet facts --stack prod --host rack-1          # the machine, as lines
    flakefleet facts --stack prod --host rack-1 --json   # the same as the install keeps it

The key is the host's `install_host_key` in a bootstrapped pool (the Linux it runs before the
install), else its `ssh_host_key`; the deploy key is $FLAKEFLEET_SSH_IDENTITY or ssh's default.
It runs the install's own query (flakefleet/bootstrap/command.py:FACTS_QUERY): read-only, and
the install reads the same before anything is changed, keeping it in its report (state).
Exit 0 read, 1 a bad stack or host, 3 the machine could not be reached with its pinned key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flakefleet.bootstrap.command import FACTS_QUERY, Facts, parse_facts, stable_name
from flakefleet.bootstrap.hardware import describe
from flakefleet.common.cli import UNREACHABLE, CommandError, add_json, print_json
from flakefleet.common.ssh import pinned_ssh, remote_command
from flakefleet.config import ConfigError
from flakefleet.config.stackfile import STACKS
from flakefleet.plan.contract import IDENTITY_ENV
from flakefleet.plan.load import load_stack


def configure(parser) -> None:
    parser.add_argument("--stack", required=True, metavar="S", help="the stack: stacks/Pulumi.<S>.yaml")
    parser.add_argument("--host", required=True, metavar="H", help="a metal host of the stack")
    parser.add_argument("--stacks-dir", type=Path, default=STACKS, metavar="DIR",
                        help="where the Pulumi.<stack>.yaml files are (default: stacks/)")
    add_json(parser, "the facts, as the install keeps them")


def lines(facts: Facts) -> list[str]:
    disks = [f"{stable_name(d)}  {d.size / 10**9:.0f} GB{'  ' + d.model if d.model else ''}"
             + ("  (removable)" if d.removable else "") for d in facts.disks]
    return [f"arch: {facts.arch}", *describe(facts.hardware, disks),
            f"installed: {'a flakefleet system' if facts.flakefleet else 'NixOS' if facts.nixos else 'no NixOS'}",
            *([f"missing for nixos-anywhere: {', '.join(facts.missing)}"] if facts.missing else [])]


def run(args) -> int:
    try:  # an unknown stack is one of the problems load_stack names
        _, inv = load_stack(args.stack, args.stacks_dir)
    except ConfigError as err:
        raise CommandError(*(f"--stack {args.stack}: {p}" for p in err.problems)) from None
    host = next((h for h in inv.hosts if h.name == args.host), None)
    if host is None or host.provider != "metal":
        metal = ", ".join(h.name for h in inv.hosts if h.provider == "metal") or "none"
        raise CommandError(f"--host {args.host}: no metal host of that name in stack {args.stack} (it has: {metal})")
    key = host.install.host_key if host.install else host.ssh_host_key
    with pinned_ssh(str(host.address), host.ssh_port, host.ssh_user, key, os.environ.get(IDENTITY_ENV)) as ssh:
        try:
            res = subprocess.run([*ssh, remote_command(FACTS_QUERY)], capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            res = subprocess.CompletedProcess([], 124, "", "no answer within 120s")
    if res.returncode != 0:
        why = res.stderr.strip().splitlines()[-1:] or [f"exit {res.returncode}"]
        print(f"flakefleet facts: {host.name} ({host.address}:{host.ssh_port}) could not be reached with its pinned "
              f"key: {why[0]}", file=sys.stderr)
        return UNREACHABLE
    try:
        facts = parse_facts(res.stdout)
    except ValueError as err:
        raise CommandError(f"{host.name}: its facts: {err}") from None
    if args.json:
        print_json({"host": host.name, **facts.to_json()})
    else:
        print("\n".join([f"{host.name} ({host.address}):", *("  " + line for line in lines(facts))]))
    return 0
