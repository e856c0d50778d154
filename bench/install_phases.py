"""An install's phases (issue 27) on test machines that start as plain Debian (systemd, sshd, a
pinned pre-install key), through the install Command as the stack runs it: a first install
(facts, tools built from the flake, the stand-in nixos-anywhere: kexec, disko, install, reboot,
the installed system's first answer with the stack's key), a create that finds it installed
(state lost), and a reinstall of a joined node (drain, take out, install). Prints Markdown for
docs/benchmarks.md. Needs root.

    sudo .venv/bin/python bench/install_phases.py [runs]      # default 3
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import OFFLINE_NIX_CONFIG, STANDIN_FLAKE  # noqa: E402
from tests.local_fleet import local_fleet  # noqa: E402
from tests.machines.machine import add_machine  # noqa: E402
from tests.test_bootstrap_hosts import deliver, install_command, planned  # noqa: E402
from tests.testhosts import keypair  # noqa: E402

HOSTS = {"cp-0": "127.0.0.201", "byo-0": "127.0.0.202"}
PHASES = ("check", "facts", "take_out", "tools", "nixos_anywhere", "first_answer")


def timed_install(fleet, private: str, plan) -> tuple[float, dict]:
    cmd, inputs = install_command(fleet, private, plan)
    start = time.monotonic()
    [step] = cmd.up(inputs)
    wall = time.monotonic() - start
    assert step.proc.returncode == 0, step.proc.stderr[-2000:]
    return wall, json.loads(step.proc.stdout)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})" if values else "-"


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    os.environ.update(FLAKEFLEET_FLAKE=STANDIN_FLAKE, NIX_CONFIG=OFFLINE_NIX_CONFIG)
    rows: dict[str, list[tuple[float, dict]]] = {"first install": [], "installed already": [], "reinstall": []}
    with tempfile.TemporaryDirectory() as tmp, local_fleet(Path(tmp), HOSTS) as (fleet, hosts):
        installed = keypair(Path(tmp) / "installed_host_key", "byo-0")
        private = (Path(tmp) / "installed_host_key").read_text()
        plans, plan = planned(fleet, hosts, installed)
        assert deliver(fleet, plans["cp-0"]).returncode == 0
        for i in range(runs):  # a new plain Debian machine in byo-0's place each time
            old = hosts["byo-0"]
            old.stop()
            hosts["byo-0"] = add_machine(fleet, f"byo-0-{i}", old.address, host_key_file=old.root / "ssh_host_ed25519_key")
            rows["first install"].append(timed_install(fleet, private, plan))
            rows["installed already"].append(timed_install(fleet, private, plan))
        assert deliver(fleet, plans["byo-0"]).returncode == 0
        for i in range(runs):
            plans, again = planned(fleet, hosts, installed, reinstall=f"bench-{i}")
            rows["reinstall"].append(timed_install(fleet, private, again))
            assert deliver(fleet, plans["byo-0"]).returncode == 0  # joined again: the next one drains it
    print(f"| install ({runs} runs each) | wall (s) | " + " | ".join(PHASES) + " |")
    print("|---|---|" + "---|" * len(PHASES))
    for name, results in rows.items():
        cells = [spread([r["timings"][p] for _, r in results if p in r["timings"]]) for p in PHASES]
        print(f"| {name} | {spread([w for w, _ in results])} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
