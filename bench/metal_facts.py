"""What reading a machine costs before its install (issue 39), on a test machine that runs plain
Debian with systemd (tests/machines): the install's facts query over pinned SSH as it was (disks,
tools, state) against as it is now (also firmware, addresses, routes, PCI devices), paired run
by run; `flakefleet facts` as a user runs it (a Python process, the stack file read and
validated, one SSH); and the size of what the install keeps in its report (state). Prints
Markdown for docs/benchmarks.md. Needs root.

    sudo .venv/bin/python bench/metal_facts.py [runs]      # default 10
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flakefleet.bootstrap.command import FACTS_QUERY, parse_facts  # noqa: E402
from flakefleet.bootstrap.hardware import HARDWARE_QUERY  # noqa: E402
from flakefleet.common.ssh import pinned_ssh, remote_command  # noqa: E402
from tests.local_fleet import local_fleet, write_stack_file  # noqa: E402
from tests.test_bootstrap_hosts import stack  # noqa: E402
from tests.testhosts import run_as_deployer  # noqa: E402

HOSTS = {"cp-0": "127.0.0.203", "byo-0": "127.0.0.204"}
BEFORE = ["sh", "-c", FACTS_QUERY[2].replace("; " + HARDWARE_QUERY, "")]


def over_ssh(host, identity: str, query: list[str]) -> tuple[float, str]:
    with pinned_ssh(host.address, host.port, "root", host.host_key, identity) as ssh:
        start = time.monotonic()
        out = subprocess.run([*ssh, remote_command(query)], capture_output=True, text=True, check=True).stdout
        return time.monotonic() - start, out


def row(name: str, values: list[float]) -> str:
    return f"| {name} | {statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f}) |"


def main(runs: int) -> None:
    assert HARDWARE_QUERY in FACTS_QUERY[2] and "--hardware" not in BEFORE[2]
    with tempfile.TemporaryDirectory() as tmp, local_fleet(Path(tmp) / "fleet", HOSTS,
                                                            bootloader="systemd-boot") as (fleet, hosts):
        byo, identity = hosts["byo-0"], str(fleet.client_key)
        write_stack_file(Path(tmp), stack(hosts, hosts["byo-0"].host_key))
        before, after, cli = [], [], []
        over_ssh(byo, identity, FACTS_QUERY)  # warm-up
        for _ in range(runs):
            before.append(over_ssh(byo, identity, BEFORE)[0])
            seconds, out = over_ssh(byo, identity, FACTS_QUERY)
            after.append(seconds)
            start = time.monotonic()
            proc = run_as_deployer(fleet, ["flakefleet", "facts", "--stack", "local", "--host", "byo-0",
                                           "--stacks-dir", tmp], {})
            cli.append(time.monotonic() - start)
            assert proc.returncode == 0, proc.stderr
        kept = json.dumps(parse_facts(out).to_json(), sort_keys=True)
        old = json.dumps(parse_facts(over_ssh(byo, identity, BEFORE)[1]).to_json(), sort_keys=True)
        ratios = [a / b for a, b in zip(after, before)]
    print(f"| what ({runs} runs, wall seconds: median (min-max)) | time |\n|---|---|")
    print(row("facts query over pinned SSH, before (disks, tools, state)", before))
    print(row("facts query over pinned SSH, now (+ firmware, addresses, routes, PCI)", after))
    print(f"| now / before, pair by pair | {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |")
    print(row("`flakefleet facts --stack local --host byo-0` (whole process)", cli))
    print(f"\nThe report the install keeps (state): {len(old)} bytes before, {len(kept)} bytes now.")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
