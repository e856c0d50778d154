"""Roll hosts back to their previous generation: the operator's `nixos-rebuild --rollback`.

    flakefleet rollback --stack S (--host H | --pool P) [--outputs outputs.json]

Each host in turn (a pool one host at a time, stopping at the first failure) is switched to the
newest system flakefleet confirmed on it that is not the running one (a generation that failed
and was rolled back is never the target; plain `nixos-rebuild --rollback` could pick it) with the same machinery as a delivery: a host-side dead-man switch
armed before the switch, and confirmation over a new connection that the host is healthy and its
Node Ready; otherwise the host goes back to where it was. The rollback is recorded on the host,
so `flakefleet drift` reports it ("rolled back by `flakefleet rollback`").

The stack's state still says the hosts run the stack's system, so a plain `pulumi up` changes
nothing; the command prints the `pulumi up --replace` that delivers the stack's system again
(safe: a replaced delivery never removes its host).

Hosts are reached as delivery reaches them: addresses from the stack file, host keys from the
stack file (bring-your-own hosts) or from the last update's outputs (EC2 hosts: `--outputs F`, else
read with the Pulumi CLI).
Exit 0: all rolled back; 1: bad input; 3: a host could not be rolled back (it says why).
"""

from __future__ import annotations

import os
import sys

from flakefleet.plan.contract import ROLLED_BACK, DeliveryFailed, DeliveryPlan, Endpoint
from flakefleet.delivery.activation import roll_back_generation
from flakefleet.host.session import HostSession
from flakefleet.config import StackConfig
from flakefleet.plan.inventory import Host, Inventory
from flakefleet.plan.load import load_stack_or_report
from flakefleet.common.cli import CommandError, main_of
from flakefleet.config.stackfile import STACKS
from flakefleet.common.outputs import add_state_arguments, read_outputs

PROJECT = "flakefleet"


def delivery_urn(stack: str, cluster: str, host: str) -> str:
    """The URN of a host's delivery Command (components/delivery.py names it `<cluster>-deliver-<host>`)."""
    return f"urn:pulumi:{stack}::{PROJECT}::flakefleet:index:Delivery$command:local:Command::{cluster}-deliver-{host}"


def host_keys(inv: Inventory, pinned: dict[str, str] | None) -> dict[str, str]:
    """Each host's pinned key: the stack file's, else the last update's (StackOutputs.host_keys)."""
    pinned = pinned or {}
    return {h.name: h.ssh_host_key or pinned.get(h.name, "") for h in inv.hosts}


def rollback_plan(host: Host, keys: dict[str, str], inv: Inventory, cfg: StackConfig) -> DeliveryPlan:
    """A plan for the runner: reach the host, confirm it healthy and its Node Ready via the control
    planes (the stack's health gate; its boot timeout when the rollback reboots)."""
    via = tuple(Endpoint.of(cp, keys[cp.name]) for cp in inv.control_planes if keys.get(cp.name))
    bare_metal = cfg.pool(host.pool).bare_metal
    return DeliveryPlan(
        host=host.name, address=str(host.address), port=host.ssh_port, user=host.ssh_user, host_key=keys[host.name],
        system="", drv="", health_timeout_s=cfg.delivery.health_timeout_s, settle_s=cfg.delivery.settle_s,
        boot_timeout_s=cfg.delivery.metal_boot_timeout_s if bare_metal else cfg.delivery.boot_timeout_s,
        batch=(host.name,), ready_via=via, control_planes=via,
    )


def select(inv: Inventory, host: str | None, pool: str | None) -> tuple[list[Host], str | None]:
    """The hosts asked for, or a one-line problem."""
    if host is not None:
        chosen = [h for h in inv.hosts if h.name == host]
        return chosen, None if chosen else f"no host {host!r} in the stack (have: {', '.join(h.name for h in inv.hosts)})"
    chosen = inv.pool_hosts(pool)
    pools = sorted({h.pool for h in inv.hosts})
    return chosen, None if chosen else f"no pool {pool!r} with hosts in the stack (have: {', '.join(pools)})"


def pinned_keys(inv: Inventory, args, needed: list[str]) -> dict[str, str]:
    """Each host's pinned key (host_keys): the stack file's, and where `needed` hosts lack one
    there (EC2 hosts), the last update's outputs (`--outputs`, else the Pulumi CLI's); CommandError
    naming what to do when a needed host still has none."""
    keys = host_keys(inv, None)
    if args.outputs is None and all(keys.get(n) for n in needed):
        return keys
    outputs = read_outputs(args.outputs, args.stack)
    keys = host_keys(inv, outputs.host_keys)
    unknown = [n for n in needed if not keys.get(n)]
    if unknown and not outputs.updated:
        raise CommandError(f"no pinned host key for {', '.join(unknown)}: {outputs.not_yet(args.stack)}")
    if unknown:
        raise CommandError(f"no pinned host key for {', '.join(unknown)} in {outputs.source} "
                           "(a host the last update did not deliver to)")
    return keys


def configure(parser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--host", metavar="H", help="one host")
    which.add_argument("--pool", metavar="P", help="every host of a pool, one at a time")
    add_state_arguments(parser, stack_required=True, stacks_dir=STACKS)


def run(args) -> int:
    if (loaded := load_stack_or_report(args.stack, args.stacks_dir)) is None:
        return 1
    cfg, inv = loaded
    hosts, problem = select(inv, args.host, args.pool)
    if problem:
        raise CommandError(problem)
    keys = pinned_keys(inv, args, [h.name for h in hosts])
    done = []
    for host in hosts:
        session = HostSession(rollback_plan(host, keys, inv, cfg), dict(os.environ))
        try:
            print(roll_back_generation(session), flush=True)
            done.append(host.name)
        except DeliveryFailed as err:
            print(f"[{host.name}] {err}", file=sys.stderr, flush=True)
            return ROLLED_BACK
        finally:
            session.close()
    replace = " ".join(f"--replace '{delivery_urn(args.stack, cfg.cluster.name, h)}'" for h in done)
    if all(h.address.is_loopback for h in inv.hosts):  # the demo's stack: its config file holds the signing key
        replace += " --config-file .demo/Pulumi.local.yaml"
    print(f"\n`flakefleet drift` now reports {', '.join(done)} as rolled back. To deliver the stack's system again:\n"
          f"  pulumi up --stack {args.stack} {replace}")
    return 0


main = main_of("flakefleet rollback", configure, run, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
