"""What the stack's last update exported, and what the program does with it before any resource:
refuse a CNI switch, and say per pool what changes since then."""

from __future__ import annotations

import pulumi

from flakefleet.config import StackConfig
from flakefleet.facts.flake import default_cache_dir
from flakefleet.plan.contract import System
from flakefleet.plan.inventory import Inventory
from flakefleet.plan.rollout import reboot_notes
from flakefleet.preview.compare import compare
from flakefleet.preview.derivations import ShowError
from flakefleet.preview.manifest import Manifest, manifests
from flakefleet.preview.render import pool_text
from flakefleet.preview.sides import deployed_side, stack_side

DIAGNOSTIC_CAP = 10  # lines of packages or services per pool in a preview
READ_STACK_OUTPUTS = "pulumi:pulumi:readStackOutputs"


def last_update() -> pulumi.Output[dict]:
    """This stack's own outputs as its last update exported them ({} before the first), read with
    the engine's builtin invoke `pulumi:pulumi:readStackOutputs` (pkg/resource/deploy/builtins.go,
    what a StackReference reads through too). An invoke is not a resource: a StackReference to
    the stack itself was, and every preview after an update showed its outputs as `~ outputs`."""
    name = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    return pulumi.runtime.invoke_output(READ_STACK_OUTPUTS, {"name": name}).apply(lambda r: (r or {}).get("outputs") or {})


def refuse_cni_switch(cfg: StackConfig, last: pulumi.Output[dict]) -> pulumi.Output[list]:
    """An Output every top-level component depends on: it fails, in one line, when the cluster's
    last update ran another CNI, so nothing is created, changed or delivered. Pods keep their
    addresses and policies from the old CNI: switching needs a rebuild, not a rollout."""

    def check(previous) -> list:
        if previous and previous != cfg.cluster.cni:
            raise pulumi.RunError(
                f"flakefleet:cluster.cni: the cluster runs {previous}; switching a running cluster to "
                f"{cfg.cluster.cni} is refused (pods keep {previous}'s addresses and policies): rebuild the "
                f"cluster with {cfg.cluster.cni} (docs/nixos.md) or keep cni: {previous}"
            )
        return []

    return last.apply(lambda outputs: check(outputs.get("cluster_cni")))


def announce_changes(cfg: StackConfig, inventory: Inventory, systems: dict[str, System],
                     last: pulumi.Output[dict]) -> dict[str, Manifest]:
    """Preview diagnostics, one per pool that changes against the last update (this stack's own
    outputs `system_manifests` and `nodes`, see `last_update`): packages, services,
    reboots, hosts and waves. Returns the systems' manifests (exported for the next preview).
    Stacks last updated before manifests were exported get the reboot lines (`boot`) only."""
    try:
        mine = manifests(systems, default_cache_dir())
    except ShowError as err:
        pulumi.log.warn(f"cannot read the systems' derivations ({err}): the preview lists no package changes")
        mine = {}

    def log(previous: dict) -> None:
        before = deployed_side(previous) if mine else None
        if before is None:
            lines = reboot_notes(cfg, inventory, systems, previous.get("boot"))
        else:
            changes = compare(before, stack_side(cfg, inventory, mine))
            lines = [pool_text(c, DIAGNOSTIC_CAP) for c in changes if c.status != "unchanged"]
        for line in lines:
            pulumi.log.info(line)

    last.apply(log)
    return mine


def pinned_host_keys(last: pulumi.Output[dict]) -> pulumi.Output[dict[str, str]]:
    """Host name -> the SSH host key the last update pinned (its `nodes` output; {} before the first)."""
    def keys(outputs: dict) -> dict[str, str]:
        nodes = outputs.get("nodes")
        if not isinstance(nodes, dict):
            return {}
        return {h: row["host_key"] for h, row in nodes.items() if isinstance(row, dict) and row.get("host_key")}

    return last.apply(keys)
