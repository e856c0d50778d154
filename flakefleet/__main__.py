"""flakefleet's offline command line.

    python -m flakefleet plan --stack dev                  # validate a stack file and print its inventory
    python -m flakefleet plan --stack dev --outputs o.json # ... and which hosts reboot (evaluates, needs Nix)
    python -m flakefleet diff --stack dev [--base REF]     # what a change does to each pool's system
    python -m flakefleet drift --outputs outputs.json      # hosts against what the stack wants
    python -m flakefleet status --outputs outputs.json     # per host: Ready, k3s, etcd, system, last delivery
    python -m flakefleet dr list --bucket B --cluster C    # etcd snapshots; also verify, pick
    python -m flakefleet rollback --stack S --host H       # back to the previous generation (or --pool P)
    python -m flakefleet remove --stack S --host H --force # a dead host out of the cluster (Node, etcd member)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flakefleet.plan.inventory import Inventory
from flakefleet.config.stackfile import STACKS, stack_names
from flakefleet.plan.load import load_stack_or_report


def render_plan(stack: str, inv: Inventory, pulled: list[str] | None = None) -> str:
    """The inventory as a table a reviewer can read: every host, its role, pool, zone and address;
    then the autoscaled pools (`pulled`: a line each), whose hosts are their groups'."""
    rows = [("host", "role", "pool", "zone", "address", "provider")]
    rows += [(h.name, h.role, h.pool, h.zone or "-", str(h.address), h.provider) for h in inv.hosts]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"stack {stack}: {len(inv.hosts)} hosts, API {inv.api_endpoint}"]
    if inv.vpc is not None:
        lines.append(f"vpc {inv.vpc}: " + ", ".join(f"{z.name} private {z.private} public {z.public}" for z in inv.zones))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines + (pulled or []))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["diff"]:
        from flakefleet.preview import cli

        return cli.main(argv[1:])
    if argv[:1] == ["drift"]:
        from flakefleet.ops import drift

        return drift.main(argv[1:])
    if argv[:1] == ["status"]:
        from flakefleet.ops import status

        return status.main(argv[1:])
    if argv[:1] == ["dr"]:
        from flakefleet.ops import dr

        return dr.main(argv[1:])
    if argv[:1] == ["rollback"]:
        from flakefleet.ops import rollback

        return rollback.main(argv[1:])
    if argv[:1] == ["remove"]:
        from flakefleet.ops import remove

        return remove.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m flakefleet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="validate a stack file and print every host's planned address")
    plan.add_argument("--stack", required=True, help=f"one of: {', '.join(stack_names())}")
    plan.add_argument("--stacks-dir", type=Path, default=STACKS, help="where the Pulumi.<stack>.yaml files are")
    plan.add_argument("--outputs", type=Path, help="`pulumi stack output --json` of the stack: evaluate every "
                      "pool's system (needs Nix) and say which hosts reboot for it")
    sub.add_parser("diff", help="what a change does to each pool's NixOS system (see python -m flakefleet diff -h)")
    sub.add_parser("drift", help="compare every host with what the stack wants (see python -m flakefleet.ops.drift -h)")
    sub.add_parser("status", help="the fleet in one table: Ready, k3s, etcd, system, last delivery "
                   "(see python -m flakefleet.ops.status -h)")
    sub.add_parser("dr", help="etcd snapshots: list, verify, pick (see python -m flakefleet.ops.dr -h)")
    sub.add_parser("rollback", help="hosts back to their previous generation (see python -m flakefleet.ops.rollback -h)")
    sub.add_parser("remove", help="a dead host out of the cluster, forced (see python -m flakefleet.ops.remove -h)")
    args = parser.parse_args(argv)

    if (loaded := load_stack_or_report(args.stack, args.stacks_dir)) is None:
        return 2
    cfg, inv = loaded
    from flakefleet.plan.rollout import pulled_rollout_text

    pulled = [f"pool {p.name} (autoscaled, its group's hosts): {pulled_rollout_text(cfg, p.name)}"
              for p in cfg.pools if p.autoscaling is not None]
    print(render_plan(args.stack, inv, pulled))
    return reboots(cfg, inv, args.outputs) if args.outputs else 0


def reboots(cfg, inv: Inventory, outputs: Path) -> int:
    """Which hosts reboot for the systems the stack evaluates to, against the last update's `boot`."""
    from flakefleet.plan.specs import system_specs
    from flakefleet.plan.rollout import reboot_notes
    from flakefleet.nixos.evaluate import evaluate_systems, EvaluationError
    from flakefleet.facts.flake import resolve_flake

    try:
        systems, _ = evaluate_systems(resolve_flake(cfg.delivery.flake), system_specs(cfg, inv))
    except EvaluationError as err:
        print("cannot evaluate the systems:", *err.problems, sep="\n  ", file=sys.stderr)
        return 2
    notes = reboot_notes(cfg, inv, systems, json.loads(outputs.read_text()).get("boot"))
    print("reboots:", *(notes or ["none: no pool's kernel, initrd, modules or kernel parameters change"]), sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
