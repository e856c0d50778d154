"""One host being worked on: its plan, the deployer's environment (secrets), pinned SSH to it and
to the control planes, the report being built, and progress lines for people.

Every phase of a delivery (flakefleet/delivery/) and every cluster operation on a host
(flakefleet/cluster/) takes a `HostSession`. SSH is OpenSSH with a known_hosts file built from the
pinned keys of the host and the control planes, and StrictHostKeyChecking=yes.
"""

from __future__ import annotations

import secrets as pysecrets
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from flakefleet.common.retry import backoff_delays
from flakefleet.common.ssh import PinnedSSH
from flakefleet.host.protocol import Call
from flakefleet.plan.contract import (
    IDENTITY_ENV,
    INSTANCE_ENV,
    PREVIOUS_STDOUT_ENV,
    SECRET_ENV_PREFIX,
    UNREACHABLE,
    DeliveryFailed,
    DeliveryPlan,
    Endpoint,
    Report,
    report_in,
)

def previous_report(env: dict[str, str]) -> dict:
    """The report of this Command's last create or update, from pulumi-command ({} when none)."""
    return report_in(env.get(PREVIOUS_STDOUT_ENV))


class HostSession:
    """One host's plan, connection and report (no phases: those take a session)."""

    def __init__(self, plan: DeliveryPlan, env: dict[str, str]):
        if plan.identity_file is None and env.get(IDENTITY_ENV):
            plan = replace(plan, identity_file=env[IDENTITY_ENV])
        self.plan = plan
        self.env = env
        self.previous = previous_report(env)
        self.report = Report(
            plan.host,
            system=plan.system,
            host_key=plan.host_key,
            instance=env.get(INSTANCE_ENV, ""),
            owner=self.previous.get("owner") or pysecrets.token_hex(8),
        )
        # What secure k3s tokens carry: what the last delivery found, else the stack's server CA.
        self.ca_hash = self.previous.get("ca_hash") or plan.ca_hash
        self.token = f"{int(time.time())}-{pysecrets.token_hex(4)}"
        self.remote = PinnedSSH((plan, *plan.ready_via, *plan.control_planes), plan.identity_file)

    @property
    def known_hosts(self) -> Path:
        return self.remote.known_hosts

    def say(self, message: str) -> None:
        """Progress for people, on stderr: the Command logs stderr only (its stdout is the report,
        kept in state but not logged, so `pulumi up` does not print the JSON as well)."""
        print(f"[{self.plan.host}] {message}", file=sys.stderr, flush=True)

    def ssh(self, remote: list[str], stdin: str | None = None, timeout: float = 120, to: Endpoint | None = None
            ) -> subprocess.CompletedProcess:
        """`remote` on the host (or on the control plane `to`)."""
        return self.remote.run(to or self.plan, remote, stdin=stdin, timeout=timeout)

    def hostctl(self, call: Call) -> subprocess.CompletedProcess:
        """One hostctl verb on the host (flakefleet/host/protocol.py builds each)."""
        return self.ssh(call.argv(), stdin=call.stdin(), timeout=call.timeout)

    def timed(self, phase: str, start: float) -> None:
        self.report.timings[phase] = round(time.monotonic() - start, 3)

    def file_contents(self) -> list[tuple[str, str, bytes]]:
        """The plan's files as (path, mode, content), secrets read from the environment."""
        contents = []
        for f in self.plan.files:
            if f.secret_env is not None:
                if not f.secret_env.startswith(SECRET_ENV_PREFIX) or f.secret_env not in self.env:
                    raise DeliveryFailed(f"secret for {f.path} is missing from the environment ({f.secret_env})")
                data = self.env[f.secret_env].encode()
                if f.k3s_token and self.ca_hash:  # docs.k3s.io/cli/token: K10<CA hash>::<user>:<password>
                    data = f"K10{self.ca_hash}::{f.k3s_token}:".encode() + data
            else:
                data = (f.content or "").encode()
            contents.append((f.path, f.mode, data))
        return contents

    def wait_for_ssh(self) -> None:
        """Until the host answers over SSH, with growing pauses, at most `boot_timeout_s`."""
        start = time.monotonic()
        deadline = start + self.plan.boot_timeout_s
        attempts, last = 0, ""
        for delay in backoff_delays():
            attempts += 1
            res = self.ssh(["true"], timeout=30)
            if res.returncode == 0:
                self.timed("wait", start)
                return
            last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"ssh exit {res.returncode}"
            if "Host key verification failed" in res.stderr or "IDENTIFICATION HAS CHANGED" in res.stderr:
                last = "its SSH host key does not match the pinned key"
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
        raise DeliveryFailed(
            f"host {self.plan.host} ({self.plan.address}:{self.plan.port}) unreachable after {attempts} attempts "
            f"in {time.monotonic() - start:.0f}s: {last}; nothing was changed on it",
            UNREACHABLE,
        )

    def close(self) -> None:
        self.remote.close()
