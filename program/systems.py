"""Every pool's NixOS system, evaluated while the program runs so a preview shows which pools change."""

from __future__ import annotations

import pulumi

from flakefleet.config import StackConfig
from flakefleet.facts.flake import resolve_flake
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
    evaluated = sorted(name for name, how in origin.items() if how == "eval")
    if evaluated:
        pulumi.log.info(f"evaluated NixOS systems: {', '.join(evaluated)}")
    if configurations.stale_for(flake / configurations.FILE_NAME, pulumi.get_stack(), specs):
        pulumi.log.warn(f"{configurations.FILE_NAME} does not list this stack's systems as they are now "
                        "(the flake's nixosConfigurations): run `make configurations` and commit it")
    return systems
