"""Deliver one host: put its system on it, switch atomically, prove health, roll back on failure.

Invoked by one `pulumi_command.local.Command` per host as `scripts/flakefleet deliver`. The
plan (no secrets) comes in FLAKEFLEET_DELIVERY as JSON; secrets come only through the
environment (FLAKEFLEET_SIGNING_KEY, and FLAKEFLEET_SECRET_<NAME> for each secret file), never
arguments, and never reach stdout or stderr, which Pulumi keeps in state.

Phases: build and sign locally (build.py) -> wait for SSH (bounded, growing back-off) -> inspect
and claim the host -> move the system into the host's store (transfer.py: substitute, build on
target, or copy) -> stage facts and secrets over SSH stdin (mode 0600, never the store) ->
restore a snapshot when rebuilding (cluster/restore.py) -> switch: live (activation.py:
activate under a host-side dead-man switch, confirm over a new connection with a health check)
or through a reboot (reboot.py) -> on any failure, roll back and exit non-zero saying so.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict

from flakefleet.cluster import membership
from flakefleet.cluster.restore import restore, snapshot_before_upgrade
from flakefleet.delivery import reboot, transfer
from flakefleet.delivery.activation import activate, confirm, stage
from flakefleet.delivery.build import build_here
from flakefleet.delivery.prune import prune
from flakefleet.delivery.resize import current_type, resize
from flakefleet.host.files import HostFile, files_digest
from flakefleet.host import protocol as hostctl
from flakefleet.host.protocol import HostState
from flakefleet.host.session import HostSession
from flakefleet.plan.contract import FAILED, OK, PLAN_ENV, PREVIOUS_STDOUT_ENV, DeliveryFailed, DeliveryPlan, Report
from flakefleet.common.cli import guard


def needs_delivery(plan: DeliveryPlan, previous: dict, digest: str, instance: str) -> list[str]:
    """Why an `update` must reach the host (empty: only bookkeeping changed, e.g. its batch)."""
    if not previous.get("system"):
        return ["no earlier delivery of this Command recorded"]
    wanted = {"system": plan.system, "digest": digest, "host_key": plan.host_key, "instance": instance}
    reasons = [f"{key} changed" for key, value in wanted.items() if previous.get(key, "") != value]
    if plan.restore_id is not None and previous.get("restored") != plan.restore_id:
        reasons.append(f"restore {plan.restore_id} pending")
    return reasons


class HostDelivery(HostSession):
    """One host's delivery: its phases in order (`deliver`), pulumi-command's `update` and the
    removal that is its `delete`."""

    def deliver(self) -> Report:
        """The phases, in order; each raises DeliveryFailed with what was (not) changed."""
        total = time.monotonic()
        build_here(self)
        self.wait_for_ssh()
        state = self.inspect()
        resize(self)  # a new instance type first: its restart is drained and health-gated
        membership.cluster_ca(self)  # the CA its secure tokens pin
        contents, digest = self.files_for(state)
        restore_pending = self.plan.restore_id is not None and state.restored != self.plan.restore_id
        if state.current == self.plan.system and state.applied == digest and not restore_pending:
            self.report.outcome = "up to date"
            self.say(f"already runs {self.plan.system} with these files; nothing to do")
            transfer.share_pool_build(self)  # the pool's other hosts may be waiting for it in the cache
            return self.report
        transfer.transfer(self)
        stage(self, contents)
        if self.plan.restore_id:
            restore(self)
        snapshot_before_upgrade(self, state)
        self.switch(digest, state.current)
        self.timed("total", total)
        return self.report

    def inspect(self) -> HostState:
        """What the host runs, whether it changed outside flakefleet; then claim it for this delivery."""
        state = HostState.parse(self.hostctl(hostctl.state()).stdout)
        applied_profile = state.applied_profile
        self.report.found = {
            "running": state.current,
            "outside_flakefleet": bool(applied_profile) and state.profile != applied_profile,
        }
        if self.report.found["outside_flakefleet"]:
            self.say(f"found profile {state.profile} where flakefleet left {applied_profile}: "
                     "changed outside flakefleet")
        # Before anything else: this Command now holds the host, so the delete of a Command it
        # replaces (Pulumi runs it after this create) sees it was superseded.
        if self.hostctl(hostctl.claim(self.report.owner)).returncode != 0:
            raise DeliveryFailed(f"could not record this delivery on {self.plan.host}; nothing was changed")
        if not state.applied and not state.owner:
            membership.forget_stale_node(self)
        reboot.fell_back(self, state)
        return state

    def files_for(self, state: HostState) -> tuple[list[HostFile], str]:
        """The host's files (joining an existing cluster where one runs) and their digest."""
        planned = self.file_contents()
        self.report.digest = files_digest(self.plan.system, planned)
        self.report.restored = self.plan.restore_id
        contents = membership.existing_cluster_check(self, planned, state)
        return contents, files_digest(self.plan.system, contents)

    def switch(self, digest: str, running: str) -> None:
        """Reboot into the system when its boot files changed (and `reboot` allows), else activate
        it live; either way confirmed healthy or rolled back."""
        why = reboot.reasons(self, running)
        if why and self.plan.reboot != "never":
            reboot.reboot_into(self, digest, why)
            self.report.outcome = "rebooted"
            self.say(f"rebooted into {self.plan.system} and confirmed healthy")
            self.report.pruned = prune(self)
            return
        self.report.reboot_pending = bool(why)
        activate(self)
        confirm(self, digest)
        self.report.outcome = "activated"
        pending = f"; reboot pending ({', '.join(why)} changed, reboot: never)" if why else ""
        self.say(f"switched to {self.plan.system} and confirmed healthy{pending}")
        self.report.pruned = prune(self)

    def update(self) -> Report | dict | None:
        """pulumi-command's `update` (an input changed, no replacement): deliver only when what the
        host is given changed; otherwise record the new inputs and touch no host (None)."""
        reasons = needs_delivery(self.plan, self.previous, files_digest(self.plan.system, self.file_contents()),
                                 self.report.instance)
        if not reasons:
            found = current_type(self)  # asks EC2 only, never the host
            if found is None:
                return None
            if found[1] == self.plan.instance_type:  # a report from before types were recorded
                return {**self.previous, "instance_type": found[1]}
            reasons = [f"instance type {found[1]} -> {self.plan.instance_type}"]
        self.say("delivering: " + ", ".join(reasons))
        return self.deliver()

    def remove(self) -> str:
        """pulumi-command's `delete`: the host leaves the cluster (cluster/membership.py)."""
        return membership.remove(self)


def main() -> int:
    """`deliver` (create), `deliver --update` (update), `deliver --remove` (delete): one host's plan."""
    plan_text = os.environ.get(PLAN_ENV)
    if not plan_text:
        print(f"{PLAN_ENV} is not set", file=sys.stderr)
        return FAILED
    plan = DeliveryPlan.from_json(plan_text)
    delivery = HostDelivery(plan, dict(os.environ))
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    action = {"--update": delivery.update, "--remove": delivery.remove}.get(mode, delivery.deliver)
    try:
        result = action()
    except DeliveryFailed as err:
        print(f"[{plan.host}] {err}", file=sys.stderr, flush=True)
        return err.code
    finally:
        delivery.close()
    if isinstance(result, str):  # a removal says what it did
        print(f"[{plan.host}] {result}", file=sys.stderr, flush=True)
    elif isinstance(result, dict):  # only bookkeeping changed, and the report learnt something
        print(f"[{plan.host}] only bookkeeping changed; no command on the host", file=sys.stderr)
        print(json.dumps(result), flush=True)
    elif result is None:  # an update with nothing for the host: Pulumi keeps the last delivery's report
        print(f"[{plan.host}] only bookkeeping changed (e.g. its batch); no command on the host", file=sys.stderr)
        print(os.environ.get(PREVIOUS_STDOUT_ENV, "").strip(), flush=True)
    else:
        print(json.dumps(asdict(result)), flush=True)
    return OK


if __name__ == "__main__":
    sys.exit(guard("flakefleet deliver", main))
