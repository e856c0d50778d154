"""After a rebuild: the Nodes the snapshot brought back for hosts this stack does not have, deleted."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

from flakefleet.plan.contract import PRUNE_PLAN_ENV, Endpoint, PrunePlan
from flakefleet.plan.inventory import Host


@dataclass(frozen=True)
class StaleNodesArgs:
    """After a rebuild: which Nodes to keep, and where to ask."""

    first_control_plane: Host
    """The control plane to run kubectl on."""
    host_key: pulumi.Input[str]
    """Its pinned SSH host key."""
    keep: tuple[str, ...]
    """Node names of this stack's hosts."""
    restore_id: str
    """The restore this clean-up belongs to (it runs once per restore)."""
    after: pulumi.Input[list[pulumi.Resource]]
    """The last wave of deliveries (which waited for every earlier one): stale Nodes are deleted
    once all hosts have joined."""


class StaleNodes(pulumi.ComponentResource):
    """Deletes the Node objects a restored snapshot brought back for hosts this stack does not have."""

    deleted: pulumi.Output[str]
    """What was deleted (the command's report)."""
    command_id: pulumi.Output[str]
    """The clean-up Command's id."""

    def __init__(self, name: str, args: StaleNodesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("flakefleet:index:StaleNodes", name, None, opts)
        plan = pulumi.Output.from_input(args.host_key).apply(lambda key: PrunePlan(
            keep=sorted(args.keep), endpoint=Endpoint.of(args.first_control_plane, key)).to_json())
        prune = command.local.Command(
            name,
            create="./scripts/flakefleet dr prune",
            environment={PRUNE_PLAN_ENV: plan},
            triggers=[args.restore_id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.after),
        )
        self.deleted, self.command_id = prune.stdout, prune.id
        self.register_outputs({"deleted": self.deleted})
