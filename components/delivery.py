"""NixOS delivery: one Command per host puts its pool's system on it, in rollout order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command as command

from components.machine import Machines
from flakefleet.config import StackConfig
from flakefleet.deliver import INSTANCE_ENV, PLAN_ENV, SIGNING_KEY_ENV, report_in
from flakefleet.inventory import Inventory
from flakefleet.nixos import host_system
from flakefleet.rollout import RestorePoint, host_plan, waves
from flakefleet.systems import System

RUNNER = "./scripts/flakefleet deliver"
# pulumi-command runs `create` for a new Command, `update` when an input changed (the runner
# delivers only when the system, files, host key or instance changed, else records and touches
# no host), and `delete` when the Command goes: for a host leaving the stack it drains the node;
# for the old half of any replacement it sees the new Command holds the host and does nothing.
CREATE, UPDATE, DELETE = RUNNER, f"{RUNNER} --update", f"{RUNNER} --remove"
# A *.metal boot plus copy and activation; Pulumi's default would cut a slow first delivery.
COMMAND_TIMEOUT = "120m"


@dataclass(frozen=True)
class DeliveryArgs:
    """What is delivered where."""

    config: StackConfig
    """The validated stack (pools, delivery settings)."""
    inventory: Inventory
    """The hosts, in rollout order."""
    systems: Mapping[str, System]
    """System name (pool, or pool/host) -> evaluated system."""
    generated_host_keys: Mapping[str, pulumi.Input[str]]
    """EC2 host name -> the SSH host key the stack generated; bring-your-own hosts' keys come from config."""
    signing_key: pulumi.Input[str]
    """The Nix signing key (a secret); reaches the runner only through its environment."""
    secret_environment: Mapping[str, pulumi.Input[str]]
    """FLAKEFLEET_SECRET_* -> secret value (the k3s tokens), for the host files that name them."""
    machines: Machines | None = None
    """Makes each EC2 host's machine when its wave comes (None: bring-your-own hosts only)."""
    api_ready: Sequence[pulumi.Resource] = ()
    """What joining hosts need first (the API load balancer): every wave after the first waits for it."""
    snapshot_bucket: pulumi.Input[str] | None = None
    """Bucket control planes write etcd snapshots to (their folder), or None for local snapshots only."""
    restore: RestorePoint | None = None
    """A rebuild's snapshot: restored by the first control plane before the others join."""


def found_in_report(stdout: str) -> dict:
    """What the last delivery found on the host before acting ({} when unknown)."""
    return report_in(stdout).get("found", {})


def system_in_report(stdout: str) -> str | None:
    """The system the last delivery confirmed on the host (None when unknown)."""
    return report_in(stdout).get("system") or None


class Delivery(pulumi.ComponentResource):
    """Control planes one at a time (the cluster-initializing one first), then workers in batches."""

    commands: dict[str, command.local.Command]
    """Host name -> its delivery Command."""
    host_keys: dict[str, pulumi.Output[str]]
    """Host name -> the SSH host key its delivery pinned."""
    delivered: dict[str, pulumi.Output[str]]
    """Host name -> the system it runs, known once its delivery has confirmed it healthy."""
    found: dict[str, pulumi.Output[dict]]
    """Host name -> what its last delivery found there before acting (running system, changed outside flakefleet)."""
    reboot_pending: dict[str, pulumi.Output[bool]]
    """Host name -> whether it runs a system whose kernel it has not booted yet (`reboot: never`)."""

    def __init__(self, name: str, args: DeliveryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("flakefleet:index:Delivery", name, None, opts)
        cfg, inv = args.config, args.inventory
        self.commands, self.delivered, self.found, self.reboot_pending = {}, {}, {}, {}
        self.host_keys = keys = {
            h.name: pulumi.Output.from_input(args.generated_host_keys.get(h.name) or h.ssh_host_key) for h in inv.hosts
        }
        # A plan needs its own host's key and the control planes' (readiness is asked there), never
        # every host's: each Command then depends on a handful of inputs, not on the whole fleet.
        control = [h.name for h in inv.control_planes]
        gate: pulumi.Resource | None = None
        for number, wave in enumerate(waves(cfg, inv)):
            waits = ([gate] if gate else []) + (list(args.api_ready) if number else [])
            current = []
            for host in wave:
                args.systems[host_system(cfg, host)]
                keys[host.name]
                # An EC2 host's machine waits for the previous wave too, so a change that replaces or
                # restarts instances reaches one control plane (one batch) at a time, each healthy first.
                machine = args.machines.machine(host, waits) if host.provider == "ec2" else None
                instance = [machine.instance_id] if machine else []
                needed = list(dict.fromkeys([host.name, *control]))
                plan = pulumi.Output.all(args.snapshot_bucket, *(keys[n] for n in needed)).apply(
                    lambda v, h=host, w=wave, names=needed: host_plan(
                        cfg, inv, h, w, args.systems, dict(zip(names, v[1:])), v[0], args.restore
                    )
                )
                cmd = command.local.Command(
                    f"{name}-{host.name}",
                    create=CREATE,
                    update=UPDATE,
                    delete=DELETE,
                    environment={
                        PLAN_ENV: plan.apply(lambda p: p.to_json()),
                        # A replaced instance (same address, same key) gets its system again.
                        INSTANCE_ENV: instance[0] if instance else "",
                        SIGNING_KEY_ENV: pulumi.Output.secret(args.signing_key),
                        **{env: pulumi.Output.secret(v) for env, v in args.secret_environment.items()},
                    },
                    # No triggers: a replacement would delete the old Command, and its delete is the
                    # host's removal. Every change is an update; the runner decides what reaches the host.
                    logging=command.local.Logging.STDOUT_AND_STDERR,
                    opts=pulumi.ResourceOptions(
                        parent=self,
                        # The machine waits for the previous wave already; one edge is enough.
                        depends_on=[machine] if machine else waits,
                        custom_timeouts=pulumi.CustomTimeouts(create=COMMAND_TIMEOUT, update=COMMAND_TIMEOUT),
                    ),
                )
                self.commands[host.name] = cmd
                self.delivered[host.name] = cmd.stdout.apply(system_in_report)
                self.found[host.name] = cmd.stdout.apply(found_in_report)
                self.reboot_pending[host.name] = cmd.stdout.apply(lambda s: bool(report_in(s).get("reboot_pending")))
                current.append(cmd)
            # The next wave starts only when this one is healthy: it waits for this gate, which
            # waits for every host of the wave and runs nothing. One edge into the rollout chain
            # instead of one per host of the wave: Pulumi's SDK walks a dependency's whole history
            # for each edge (to rule out cycles), so wide edges made registration quadratic.
            gate = command.local.Command(
                f"{name}-wave-{number}", opts=pulumi.ResourceOptions(parent=self, depends_on=current)
            )
        self.register_outputs({"delivered": self.delivered, "found": self.found})
