"""`flakefleet plan`: a stack file validated and planned, every host's address shown, from config
alone (no state, no cloud); with the last update's outputs, which hosts reboot for the systems
the stack evaluates to (needs Nix).

    flakefleet plan --stack dev                        # validate the stack file, print its inventory
    flakefleet plan --stack dev --outputs outputs.json # ... and which hosts reboot (evaluates, needs Nix)
    flakefleet plan --stack dev --json                 # the same for scripts

Exit 0 when the stack is valid, 1 with one line per problem when not.
"""

from __future__ import annotations

from pathlib import Path

from flakefleet.common.cli import CommandError, add_json, main_of, print_json
from flakefleet.common.outputs import read_file
from flakefleet.config import ConfigError
from flakefleet.config.stackfile import STACKS, stack_names
from flakefleet.plan.inventory import Inventory
from flakefleet.plan.load import load_stack


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


def plan_json(stack: str, inv: Inventory, pulled: dict[str, str], reboots: list[str] | None) -> dict:
    return {
        "stack": stack, "api_endpoint": inv.api_endpoint, "vpc": str(inv.vpc) if inv.vpc is not None else None,
        "zones": [{"name": z.name, "private": str(z.private), "public": str(z.public)} for z in inv.zones],
        "hosts": [{"name": h.name, "role": h.role, "pool": h.pool, "zone": h.zone, "address": str(h.address),
                   "provider": h.provider} for h in inv.hosts],
        "autoscaled_pools": [{"pool": p, "rollout": text} for p, text in pulled.items()],
        "reboots": reboots,
    }


def reboots(cfg, inv: Inventory, boot) -> list[str]:
    """Which hosts reboot for the systems the stack evaluates to, against the last update's `boot`."""
    from flakefleet.plan.specs import system_specs
    from flakefleet.plan.rollout import reboot_notes
    from flakefleet.nixos.evaluate import evaluate_systems, EvaluationError
    from flakefleet.facts.flake import resolve_flake

    try:
        systems, _ = evaluate_systems(resolve_flake(cfg.delivery.flake), system_specs(cfg, inv))
    except EvaluationError as err:
        raise CommandError("cannot evaluate the systems:", *err.problems) from None
    return reboot_notes(cfg, inv, systems, boot if isinstance(boot, dict) else None)


def configure(parser) -> None:
    parser.add_argument("--stack", required=True, metavar="S", help="the stack: stacks/Pulumi.<S>.yaml")
    parser.add_argument("--stacks-dir", type=Path, default=STACKS, metavar="DIR",
                        help="where the Pulumi.<stack>.yaml files are (default: stacks/)")
    parser.add_argument("--outputs", type=Path, metavar="FILE",
                        help="the last update's outputs (`pulumi stack output --json`, `{}` before the first): "
                        "evaluate every pool's system (needs Nix) and say which hosts reboot for it")
    add_json(parser, "the inventory")


def run(args) -> int:
    if args.stack not in stack_names(args.stacks_dir):
        have = ", ".join(stack_names(args.stacks_dir)) or "none"
        raise CommandError(f"--stack {args.stack}: no stacks/Pulumi.{args.stack}.yaml in {args.stacks_dir} (have: {have})")
    try:
        cfg, inv = load_stack(args.stack, args.stacks_dir)
    except ConfigError as err:
        raise CommandError(*(f"stack {args.stack}: {p}" for p in err.problems)) from None
    from flakefleet.plan.rollout import pulled_rollout_text

    pulled = {p.name: pulled_rollout_text(cfg, p.name) for p in cfg.pools if p.autoscaling is not None}
    outputs = read_file(args.outputs, args.stack) if args.outputs else None
    if outputs:  # the waves as the next update keeps them
        inv = inv.after(outputs.batches, outputs.node_addresses)
    notes = reboots(cfg, inv, outputs.boot) if outputs else None
    if args.json:
        print_json(plan_json(args.stack, inv, pulled, notes))
        return 0
    print(render_plan(args.stack, inv, [f"pool {p} (autoscaled, its group's hosts): {t}" for p, t in pulled.items()]))
    if notes is not None:
        print("reboots:", *(notes or ["none: no pool's kernel, initrd, modules or kernel parameters change"]), sep="\n  ")
    return 0


main = main_of("flakefleet plan", configure, run, __doc__.splitlines()[0])
