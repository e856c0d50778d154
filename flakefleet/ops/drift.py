"""Drift: is every host running the system the stack wants, as flakefleet left it?

    flakefleet drift --stack S [--json]            # the outputs read with `pulumi stack output --json --stack S`
    flakefleet drift --outputs outputs.json [--json]

The outputs are `pulumi stack output --json` (the `nodes` table: address, system, host key,
SSH port and user). For every host, over pinned SSH, the report compares `/run/current-system`
with the wanted system, and the system profile with the generation flakefleet recorded when it
last confirmed a delivery: a difference means someone switched the host outside flakefleet.
Exit 0 when every host is in sync (and before the first update, when there is none), 2 when any
drifted, 3 when any could not be checked.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from flakefleet.host import protocol as hostctl
from flakefleet.host.protocol import HostState
from flakefleet.plan.contract import IDENTITY_ENV
from flakefleet.common.ssh import pinned_ssh
from flakefleet.common.cli import main_of, print_json
from flakefleet.common.outputs import NodeRow, add_report_arguments, read_state

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
    reboot_pending: bool = False


def split_pools(nodes: dict[str, NodeRow], running: dict[str, str] | None = None) -> dict[str, dict]:
    """Per pool: the system it wants, and every host not on it -> what it runs (pure).

    `nodes` is the stack's `nodes` output; what a host runs is `running[host]` when given (asked
    live), else the system its last delivery confirmed. A pool whose rollout stopped half way
    (a failed host in a batch whose other hosts switched) shows here by name.
    """
    pools: dict[str, dict] = {}
    for host, node in sorted(nodes.items()):
        wanted = node.wanted
        entry = pools.setdefault(node.pool, {"wanted": [], "hosts": 0, "off_wanted": {}})
        entry["hosts"] += 1
        if wanted not in entry["wanted"]:
            entry["wanted"].append(wanted)
        now = (running or {}).get(host, node.system)
        if now != wanted:
            entry["off_wanted"][host] = now or "unknown"
    return pools


def classify(host: str, wanted: str, state: HostState) -> HostDrift:
    """Compare what a host reports with what the stack wants (pure)."""
    running = state.current
    applied_profile = state.applied_profile
    outside = bool(applied_profile) and state.profile != applied_profile
    problems = []
    if running != wanted:
        problems.append(f"runs {running or 'nothing'} instead of {wanted}")
    if outside:
        problems.append(f"system profile is {state.profile} but flakefleet left {applied_profile}: "
                        "changed outside flakefleet")
    if not applied_profile:
        problems.append("flakefleet has not confirmed a delivery on it")
    if state.rolled_back:
        source, target, when = (state.rolled_back.split() + ["", "", ""])[:3]
        problems.append(f"rolled back by `flakefleet rollback` at {when} (from {source})")
    status = DRIFTED if problems else IN_SYNC
    # Runs the wanted system, but not yet its kernel: a note, not drift.
    pending = list(state.reboot_pending)
    if pending:
        problems.append(f"reboot pending: {', '.join(pending)} changed since it booted")
    return HostDrift(host, status, wanted, running, outside, "; ".join(problems), bool(pending))


def check_host(name: str, node: NodeRow, identity: str | None) -> HostDrift:
    """Ask one host for its state over pinned SSH, against the system the stack wants on it."""
    wanted = node.wanted
    with pinned_ssh(node.address, node.ssh_port, node.ssh_user, node.host_key, identity) as ssh:
        call = hostctl.state(timeout=60)
        try:
            res = subprocess.run([*ssh, shlex.join(call.argv())], input=call.stdin(), capture_output=True, text=True,
                                 timeout=call.timeout)
        except subprocess.TimeoutExpired:
            res = subprocess.CompletedProcess(ssh, 255, "", "timed out")
    if res.returncode != 0:
        return HostDrift(name, UNCHECKED, wanted, "", False, res.stderr.strip()[-300:] or f"exit {res.returncode}")
    return classify(name, wanted, HostState.parse(res.stdout))


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


def render_pools(pools: dict[str, dict]) -> list[str]:
    """One line per pool that is not wholly on its system."""
    lines = []
    for name, pool in sorted(pools.items()):
        if pool["off_wanted"]:
            off = ", ".join(f"{h} (runs {s.rsplit('/', 1)[-1]})" for h, s in sorted(pool["off_wanted"].items()))
            lines.append(f"pool {name}: {pool['hosts'] - len(pool['off_wanted'])} of {pool['hosts']} hosts on "
                         f"its system; not on it: {off}")
    return lines


configure = add_report_arguments


def run(args) -> int:
    from flakefleet.ops import pulled  # autoscaled pools: their instances' reports against the pointer

    outputs = read_state(args)
    nodes = outputs.nodes
    rows = report(nodes, os.environ.get(IDENTITY_ENV))
    pools = split_pools(nodes, {r.host: r.running for r in rows if r.status != UNCHECKED})
    groups, problem = pulled.view(outputs.pulled_pools)
    if args.json:
        print_json({"updated": outputs.updated, "hosts": [asdict(r) for r in rows], "pools": pools,
                    "pulled_pools": [asdict(g) for g in groups], "pulled_problem": problem})
    elif nodes or groups or problem:
        print(render(rows))
        for line in render_pools(pools) + pulled.render(groups) + ([problem] if problem else []):
            print(line)
    if problem or any(r.status == UNCHECKED for r in rows):
        return 3
    return 2 if any(r.status == DRIFTED for r in rows) or not all(g.healthy for g in groups) else 0


main = main_of("flakefleet drift", configure, run, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
