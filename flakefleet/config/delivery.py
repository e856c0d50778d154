"""`flakefleet:delivery`: how closures reach the hosts, and who may log in to do it."""

from __future__ import annotations

import re

from typing import TYPE_CHECKING, Annotated

from pydantic import Field, field_validator

from flakefleet.config.base import NAMESPACE, Model
from flakefleet.config.rules import ssh_key_problem

if TYPE_CHECKING:
    from flakefleet.config.stack import Parsed

# The public half of scripts/demo.py's test-only deploy key, whose private half anyone can derive.
DEMO_DEPLOY_KEY_BLOB = "AAAAC3NzaC1lZDI1NTE5AAAAIGr/rz51whyC4sjXBa3r/qVn4aXg9/UhhhPgsRXYfnUC"


class DeliveryConfig(Model):
    """`flakefleet:delivery` — how closures reach the hosts."""

    flake: str | None = Field(
        None,
        description="Directory of the flake that defines the nodes, relative to the project. Default: `nixos/`. "
        "The environment variable FLAKEFLEET_FLAKE overrides it (tests use a stand-in flake).",
    )
    authorized_keys: list[str] = Field(
        default_factory=list,
        description="SSH public keys allowed to log in as root on every node (ed25519, ECDSA, RSA of 2048+ bits, or "
        "security keys such as sk-ssh-ed25519@openssh.com): at least the deploy key, which must stay authorized "
        "after a switch. Required.",
    )
    ssh_user: str = Field("root", description="SSH user for delivery. Default `root`.")
    boot_timeout_s: Annotated[int, Field(ge=1, le=7200)] = Field(
        600, description="Seconds delivery waits for a host's SSH to come up. Default 600."
    )
    metal_boot_timeout_s: Annotated[int, Field(ge=1, le=7200)] = Field(
        1800, description="The same for EC2 `*.metal` pools, which can take over 10 minutes to boot. Default 1800."
    )
    substitute_on_destination: bool = Field(
        False, description="Let hosts fetch paths from their own substituters instead of the deployer. Default `false`."
    )
    max_parallel: Annotated[int, Field(ge=1, le=256)] = Field(
        10, description="Workers delivered at once, per batch: the deployer's concurrency cap. Default 10."
    )
    max_unavailable: int | str | None = Field(
        None,
        description="Workers a batch may take out at once, as a count or a percentage of the stack's workers "
        "(`10%`, rounded down, at least 1), as Kubernetes rollouts' maxUnavailable; batches are the smaller of this "
        "and `max_parallel`. Default: none (`max_parallel`).",
    )

    @field_validator("max_unavailable")
    @classmethod
    def _count_or_percentage(cls, value: int | str | None) -> int | str | None:
        if value is None or (isinstance(value, int) and value >= 1) or (
            isinstance(value, str) and re.fullmatch(r"(100|[1-9][0-9]?)%", value)
        ):
            return value
        raise ValueError(f"{value!r} is neither a count of workers (1 or more) nor a percentage from 1% to 100%")

    def batch_size(self, workers: int) -> int:
        """Workers per batch for a fleet of `workers`."""
        if self.max_unavailable is None:
            return self.max_parallel
        if isinstance(self.max_unavailable, int):
            return min(self.max_parallel, self.max_unavailable)
        return min(self.max_parallel, max(1, workers * int(self.max_unavailable[:-1]) // 100))
    health_timeout_s: Annotated[int, Field(ge=5, le=3600)] = Field(
        300, description="Seconds a host has to confirm health after switching. Default 300."
    )


def check(stack: Parsed) -> list[str]:
    """A deploy key is required, every key must be whole, and the demo's public one stays on loopback."""
    p = f"{NAMESPACE}:"
    delivery = stack.delivery
    keys = delivery.authorized_keys if delivery is not None else []
    if not stack.known("delivery.authorized_keys"):
        return []
    problems = []
    if not keys and (delivery is not None or stack.given("pools")):
        problems.append(f"{p}delivery.authorized_keys: required; the deploy key must stay authorized on the hosts after a switch")
    for k, key in enumerate(keys):
        if (why := ssh_key_problem(key)) is not None:
            problems.append(f"{p}delivery.authorized_keys[{k}]: {why}")
        elif key.split()[1] == DEMO_DEPLOY_KEY_BLOB and not stack.loopback_fleet:
            problems.append(f"{p}delivery.authorized_keys[{k}]: the demo's test-only deploy key (its private half is "
                            "public, see scripts/demo.py) may only be authorized on loopback test hosts")
    return problems
