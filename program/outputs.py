"""The stack outputs that are more than a value: the `nodes` table."""

from __future__ import annotations

import pulumi

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
    names = [h.name for h in inventory.hosts]

    def table(values: list) -> dict[str, dict]:
        outs, keys = values[0], dict(zip(names, values[1:]))
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
                **({"install": {"layout": h.install.layout, "reinstall": h.install.reinstall}} if h.install else {}),
            }
            for h in inventory.hosts
        }

    return pulumi.Output.all(delivered, *(host_keys[n] for n in names)).apply(table)
