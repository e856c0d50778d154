"""Every pool's NixOS system, evaluated while the program runs so a preview shows which pools change."""

from __future__ import annotations

import pulumi

from flakefleet.config import StackConfig
from flakefleet.facts.flake import nixpkgs_release, resolve_flake
from flakefleet.nixos import configurations
from flakefleet.nixos.evaluate import EvaluationError, evaluate_systems
from flakefleet.plan.contract import System
from flakefleet.plan.inventory import Inventory
from flakefleet.plan.specs import system_specs


def plan_systems(cfg: StackConfig, inventory: Inventory) -> dict[str, System]:
    """Every pool's NixOS system (drv, out path), evaluated now (cached on disk: an unchanged
    preview evaluates nothing). The program reads the repository and never writes into it: when
    the flake's nixos/configurations.json no longer matches this stack, it says so."""
    flake = resolve_flake(cfg.delivery.flake)
    specs = system_specs(cfg, inventory)
    try:
        systems, origin = evaluate_systems(flake, specs)
    except EvaluationError as err:
        raise pulumi.RunError(
            f"cannot evaluate the NixOS systems of stack {pulumi.get_stack()} (flake {flake}):\n  "
            + "\n  ".join(err.problems)
        ) from None
    # An autoscaled pool's instances run the flake's pull agent (lib.pullAgent): without one
    # they could not pull their system.
    agentless = [f"flakefleet:pools[{i}].autoscaling: the flake at {flake} has no pull agent (lib.pullAgent, as "
                 f"nixos/flake.nix has) for pool {p.name}'s instances to pull their system with"
                 for i, p in enumerate(cfg.pools) if p.autoscaling is not None and not systems[p.name].agent]
    if agentless:
        raise pulumi.RunError("\n".join(agentless))
    evaluated = sorted(name for name, how in origin.items() if how == "eval")
    if evaluated:
        pulumi.log.info(f"evaluated NixOS systems: {', '.join(evaluated)}")
    if configurations.stale_for(flake / configurations.FILE_NAME, pulumi.get_stack(), specs):
        pulumi.log.warn(f"{configurations.FILE_NAME} does not list this stack's systems as they are now "
                        "(the flake's nixosConfigurations): run `make configurations` and commit it")
    return systems


def boot_release(cfg: StackConfig) -> str | None:
    """The NixOS release the EC2 hosts' AMI is of: the release the flake's lock pins, unless the
    stack pins another, which the preview then says in one line (the hosts boot one release and
    their first delivery switches them to the other). None for a fleet without EC2 hosts."""
    if not cfg.uses_ec2:
        return None
    flake = resolve_flake(cfg.delivery.flake)
    locked = nixpkgs_release(flake)
    pinned = cfg.cluster.nixos_release
    if pinned is None and locked is None:
        raise pulumi.RunError(
            f"flakefleet:cluster.nixos_release: {flake}/flake.lock pins no NixOS release branch "
            "(nixos-YY.MM); set the release of the AMI the EC2 hosts boot")
    if pinned is not None and locked is not None and pinned != locked:
        pulumi.log.warn(
            f"flakefleet:cluster.nixos_release {pinned} differs from the flake's nixpkgs (nixos-{locked}): EC2 "
            f"hosts boot the {pinned} AMI and their first delivery switches them to {locked}")
    return pinned or locked
