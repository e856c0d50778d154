"""The stack outputs that are more than a value: the `nodes` table and the `pools` split."""

from __future__ import annotations

import pulumi

from flakefleet.common.outputs import StackOutputs
from flakefleet.ops.drift import split_pools
from flakefleet.plan.inventory import Inventory


def node_table(
    inventory: Inventory,
    delivered: pulumi.Output[dict[str, dict]],
    host_keys: dict[str, pulumi.Output[str]],
    wanted: dict[str, str],
) -> pulumi.Output[dict[str, dict]]:
    """Stack output `nodes`: host name -> role, pool, address, instance type and id (None for bring-your-own),
    the system the stack wants on it, the system its last delivery confirmed there, whether it
    still boots an older kernel (`reboot: never`), and how to reach it over pinned SSH (port,
    user, host key: what `flakefleet drift` needs), and a bootstrapped host's install.
    `delivered` is the rollout's `hosts`."""
    def table(values: dict) -> dict[str, dict]:
        outs, keys = values["delivered"], values["keys"]
        return {
            h.name: {
                "role": h.role,
                "pool": h.pool,
                "address": str(h.address),
                "instance_type": h.instance_type if h.provider == "ec2" else None,
                "instance_id": outs[h.name]["instance_id"],
                "wanted": wanted[h.name],
                "system": outs[h.name]["system"],
                "reboot_pending": outs[h.name]["reboot_pending"],
                "last_outcome": outs[h.name].get("outcome"),
                "ssh_port": h.ssh_port,
                "ssh_user": h.ssh_user,
                "host_key": keys[h.name],
                # A bootstrapped host: its layout and the reinstall it was last asked for (the
                # next preview says when that changes: the host is wiped).
                **({"install": {"layout": h.install.layout, "reinstall": h.install.reinstall,
                                "network": h.install.network.summary()}} if h.install else {}),
            }
            for h in inventory.hosts
        }

    # By name (no hosts: `keys` resolves to [], and the table is empty).
    keys = pulumi.Output.all(**{h.name: host_keys[h.name] for h in inventory.hosts})
    # Nested applies, not Output.all: that would unwrap the reports into an Output per value
    # (components.whole says why that is slow); a value an apply returns is kept whole.
    return delivered.apply(lambda outs: keys.apply(lambda ks: table({"delivered": outs, "keys": ks})))


def pool_split(nodes: pulumi.Output[dict[str, dict]]) -> pulumi.Output[dict[str, dict]]:
    """Stack output `pools`: per pool, the system it wants and the hosts not on it
    (flakefleet/ops/drift.py:split_pools), the node table read as every command reads it."""
    return nodes.apply(lambda rows: split_pools(StackOutputs({"nodes": rows}, "nodes").nodes))
