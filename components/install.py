"""NixOS installed on bring-your-own machines from any Linux, once each (pools[].bootstrap)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command as command
import pulumi_tls as tls

from components import resolved
from flakefleet.plan.contract import INSTALL_PLAN_ENV, INSTALLED_KEY_ENV
from flakefleet.config import StackConfig
from flakefleet.facts.flake import resolve_flake
from flakefleet.plan.contract import System
from flakefleet.plan.inventory import Host, Inventory
from flakefleet.plan.hostplans import install_plan

RUNNER = "./scripts/flakefleet install"
# create installs (once: a machine that answers with the stack's key is not installed again);
# update never installs; a new hosts[].reinstall is a trigger: the Command is replaced, and its
# create wipes and installs the host again (drained first). Nothing runs when it goes: the
# host's delivery Command's delete takes it out of the cluster; its disks are left as they are.
CREATE, UPDATE = RUNNER, f"{RUNNER} --update"
INSTALL_TIMEOUT = "120m"


@dataclass(frozen=True)
class InstallsArgs:
    """Which hosts are installed, with what."""

    config: StackConfig
    """The validated stack."""
    inventory: Inventory
    """The hosts; those with an `install` are installed."""
    systems: Mapping[str, System]
    """System name -> evaluated system (what each host is installed with)."""


class Installs(pulumi.ComponentResource):
    """Per bootstrapped host: its installed system's SSH host key, and its install Command."""

    host_keys: dict[str, pulumi.Output[str]]
    """Host name -> the public SSH host key its installed system serves (pinned by its delivery)."""

    def __init__(self, name: str, args: InstallsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("flakefleet:index:Installs", name, None, opts)
        self._name, self._args = name, args
        child = pulumi.ResourceOptions(parent=self)
        self._keys = {h.name: tls.PrivateKey(f"{name}-{h.name}-host-key", algorithm="ED25519", opts=child)
                      for h in args.inventory.hosts if h.install is not None}
        # The provider writes an authorized_keys line (a trailing newline): pinned as one line.
        self.host_keys = {h: k.public_key_openssh.apply(str.strip) for h, k in self._keys.items()}
        self.register_outputs({"host_keys": self.host_keys})

    def install(self, host: Host, waits: Sequence[pulumi.Resource], delivery_plan: pulumi.Input[str]
                ) -> command.local.Command:
        """`host`'s install Command, after `waits` (the previous wave: one control plane, one
        batch at a time, as every change to a node)."""
        args = self._args
        flake = str(resolve_flake(args.config.delivery.flake))

        def plan_json(v: dict) -> str:
            return install_plan(args.config, args.inventory, host, args.systems, v["host_key"], v["delivery"],
                                flake).to_json()

        plan = resolved(host_key=self.host_keys[host.name], delivery=delivery_plan).apply(plan_json)
        return command.local.Command(
            f"{self._name}-{host.name}",
            create=CREATE,
            update=UPDATE,
            environment={INSTALL_PLAN_ENV: plan,
                         INSTALLED_KEY_ENV: pulumi.Output.secret(self._keys[host.name].private_key_openssh)},
            triggers=[host.install.reinstall or ""],
            logging=command.local.Logging.STDERR,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=list(waits),
                custom_timeouts=pulumi.CustomTimeouts(create=INSTALL_TIMEOUT, update=INSTALL_TIMEOUT)),
        )
