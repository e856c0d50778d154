"""Take a dead host out of the cluster: the forced, explicit removal.

    flakefleet remove --stack S --host H --force [--outputs outputs.json]

A host leaving the stack is normally drained and deleted by its delivery Command's delete (the
host answers, its pods move). A host that no longer answers cannot be drained: its pods never
leave, `kubectl drain` times out, and the removal stops with the host "still in the cluster".
This command is the way out, and it is explicit (`--force`): through a control plane that
answers, it deletes the host's Node. For a server, k3s then removes its etcd member (k3s
pkg/etcd/member_controller.go: the managed etcd controller's OnRemove calls RemovePeer), and the
Node's pods are garbage-collected; the command waits until the member list (k3s' /db/info on
that control plane) no longer has it. It refuses to remove the last control plane, or one whose
etcd quorum would not survive. Then take the host out of the stack file and `pulumi up`: the
delivery Command's delete finds the Node gone and the host silent, and succeeds.

Hosts are reached as delivery reaches them (stack file addresses, pinned keys from the stack
file or the last update's outputs: `--outputs F`, else read with the Pulumi CLI). Exit 0: removed (or already gone); 1: bad input;
3: it could not be removed (it says why).
"""

from __future__ import annotations

import os
import sys

from flakefleet.cluster.kubectl import K3S, delete_node_command, node_query, quorum_problem, servers_in
from flakefleet.cluster.membership import etcd_member_gone
from flakefleet.host.session import HostSession
from flakefleet.ops.rollback import host_keys, pinned_keys, rollback_plan
from flakefleet.config.stackfile import STACKS
from flakefleet.common.outputs import add_state_arguments
from flakefleet.common.cli import CommandError, main_of
from flakefleet.plan.contract import ROLLED_BACK, DeliveryFailed
from flakefleet.plan.load import load_stack_or_report


def remove_dead_host(run: HostSession, host: str, servers: list[str]) -> str:
    """Delete `host`'s Node through the first control plane of `run`'s plan that answers;
    refuse when the etcd members left could not keep quorum. Raises DeliveryFailed with one line."""
    for cp in run.plan.control_planes:
        if cp.host == host:
            continue
        probe = run.ssh(node_query(host), to=cp, timeout=30)
        if probe.returncode != 0:
            continue
        if not probe.stdout.strip():
            return f"{host}: no Node in the cluster (asked {cp.host}); nothing to remove"
        listing = run.ssh([K3S, "kubectl", "get", "nodes", "-o", "json"], to=cp, timeout=30)
        members = sorted(set(servers) | servers_in(listing.stdout))
        if host in members and (problem := quorum_problem(listing.stdout if listing.returncode == 0 else "", host, members)):
            raise DeliveryFailed(f"{host}: {problem}; refused")
        res = run.ssh(delete_node_command(host), to=cp, timeout=120)
        if res.returncode != 0:
            raise DeliveryFailed(f"{host}: deleting its Node on {cp.host} failed: {res.stderr.strip()[-500:]}")
        member = f", {etcd_member_gone(run, host, cp, run.plan.health_timeout_s)}" if host in members else ""
        return f"{host}: Node deleted through {cp.host}{member}"
    raise DeliveryFailed(f"{host}: no control plane answers; nothing was changed")


def configure(parser) -> None:
    parser.add_argument("--host", required=True, metavar="H", help="the dead host (in the stack file or already taken out)")
    parser.add_argument("--force", action="store_true", help="required: the host is not drained, its pods are dropped")
    add_state_arguments(parser, stack_required=True, stacks_dir=STACKS)


def run(args) -> int:
    if not args.force:
        raise CommandError("remove skips the drain (the host is dead, its pods are dropped): pass --force to do it")
    if (loaded := load_stack_or_report(args.stack, args.stacks_dir)) is None:
        return 1
    cfg, inv = loaded
    others = [cp.name for cp in inv.control_planes if cp.name != args.host]
    if not others:
        raise CommandError(f"no control plane other than {args.host} in the stack to remove it through")
    keys = host_keys(inv, None)
    if not any(keys.get(n) for n in others):
        keys = pinned_keys(inv, args, others[:1])
    planes = [cp for cp in inv.control_planes if cp.name != args.host and keys.get(cp.name)]
    servers = [cp.name for cp in inv.control_planes]
    session = HostSession(rollback_plan(planes[0], keys, inv, cfg), dict(os.environ))
    try:
        print(remove_dead_host(session, args.host, servers), flush=True)
    except DeliveryFailed as err:
        print(err, file=sys.stderr, flush=True)
        return ROLLED_BACK
    finally:
        session.close()
    print(f"Now take {args.host} out of stacks/Pulumi.{args.stack}.yaml (if it is still there) and run "
          f"`pulumi up --stack {args.stack}`: its delivery Command's delete finds the Node gone.")
    return 0


main = main_of("flakefleet remove", configure, run, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
