"""Drift: is every host running the system the stack wants, as flakefleet left it?

    python -m flakefleet drift --outputs outputs.json [--json]

`outputs.json` is `pulumi stack output --json` (the `nodes` table: address, system, host key,
SSH port and user). For every host, over pinned SSH, the report compares `/run/current-system`
with the wanted system, and the system profile with the generation flakefleet recorded when it
last confirmed a delivery: a difference means someone switched the host outside flakefleet.
Exit 0 when every host is in sync, 2 when any drifted, 3 when any could not be checked.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from flakefleet.deliver import HOSTCTL, IDENTITY_ENV, pinned_ssh

IN_SYNC, DRIFTED, UNCHECKED = "in sync", "drifted", "unreachable"


@dataclass(frozen=True)
class HostDrift:
    """One host's drift."""

    host: str
    status: str
    wanted: str
    running: str
    outside_flakefleet: bool
    detail: str


def parse_state(text: str) -> dict[str, str]:
    """`hostctl.sh state` output as a dict."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def classify(host: str, wanted: str, state: dict[str, str]) -> HostDrift:
    """Compare what a host reports with what the stack wants (pure)."""
    running = state.get("current", "")
    applied_profile = state.get("applied_profile", "")
    outside = bool(applied_profile) and state.get("profile", "") != applied_profile
    problems = []
    if running != wanted:
        problems.append(f"runs {running or 'nothing'} instead of {wanted}")
    if outside:
        problems.append(f"system profile is {state.get('profile')} but flakefleet left {applied_profile}: "
                        "changed outside flakefleet")
    if not applied_profile:
        problems.append("flakefleet has not confirmed a delivery on it")
    status = IN_SYNC if not problems else DRIFTED
    return HostDrift(host, status, wanted, running, outside, "; ".join(problems))


def check_host(name: str, node: dict, identity: str | None) -> HostDrift:
    """Ask one host for its state over pinned SSH."""
    with pinned_ssh(node["address"], node["ssh_port"], node["ssh_user"], node["host_key"], identity) as ssh:
        try:
            res = subprocess.run([*ssh, "sh -s -- state"], input=HOSTCTL.read_text(), capture_output=True, text=True,
                                 timeout=60)
        except subprocess.TimeoutExpired:
            res = subprocess.CompletedProcess(ssh, 255, "", "timed out")
    if res.returncode != 0:
        return HostDrift(name, UNCHECKED, node["system"], "", False, res.stderr.strip()[-300:] or f"exit {res.returncode}")
    return classify(name, node["system"], parse_state(res.stdout))


def report(nodes: dict[str, dict], identity: str | None, parallel: int = 16) -> list[HostDrift]:
    """Every host's drift, checked in parallel."""
    with ThreadPoolExecutor(max(1, min(parallel, len(nodes)))) as pool:
        return list(pool.map(lambda item: check_host(item[0], item[1], identity), sorted(nodes.items())))


def render(rows: list[HostDrift]) -> str:
    """A table for people."""
    table = [("host", "status", "running", "detail")]
    table += [(r.host, r.status, r.running.rsplit("/", 1)[-1] or "-", r.detail or "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(row[:3], widths)), row[3]]) for row in table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flakefleet drift", description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", required=True, type=Path, help="`pulumi stack output --json` of the stack")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    nodes = json.loads(args.outputs.read_text())["nodes"]
    rows = report(nodes, os.environ.get(IDENTITY_ENV))
    print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else render(rows))
    if any(r.status == UNCHECKED for r in rows):
        return 3
    return 2 if any(r.status == DRIFTED for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
