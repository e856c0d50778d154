"""The binary cache step: each pool's system built once and uploaded once, before the first wave."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_command as command

from flakefleet.plan.contract import PUBLISH_ENV
from flakefleet.config import StackConfig
from flakefleet.plan.contract import SIGNING_KEY_ENV
from flakefleet.plan.inventory import Inventory
from flakefleet.plan.hostplans import publish_plans
from flakefleet.plan.contract import System

PUBLISH = "./scripts/flakefleet cache"


@dataclass(frozen=True)
class PublishArgs:
    """What is published where."""

    config: StackConfig
    """The validated stack (pools' builds, cache settings)."""
    inventory: Inventory
    """The hosts (which pools substitute, which get SSH copies)."""
    systems: Mapping[str, System]
    """System name -> evaluated system."""
    cache_bucket: pulumi.Input[str] | None
    """The bucket uploads go to (None: no cache, builds on builders only)."""
    signing_key: pulumi.Input[str]
    """The Nix signing key (a secret): narinfos are signed with it."""


class Publish(pulumi.ComponentResource):
    """One Command per system that some host substitutes or a builder builds: `create`/`update` run
    when the system changes (an unchanged `up` runs nothing), and the first wave waits for all."""

    steps: list[command.local.Command]
    """The publish Commands (what the rollout's first wave depends on)."""

    def __init__(self, name: str, args: PublishArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("flakefleet:index:Publish", name, None, opts)
        cfg, inv = args.config, args.inventory
        # Which systems publish depends only on config (a bucket is given or not), never on its name.
        names = sorted(publish_plans(cfg, inv, args.systems, "bucket" if args.cache_bucket is not None else None))
        plans = pulumi.Output.from_input(args.cache_bucket).apply(
            lambda b: {s: p.to_json() for s, p in publish_plans(cfg, inv, args.systems, b).items()}
        )
        secret = pulumi.Output.secret(args.signing_key)
        self.steps = []
        for system in names:
            plan = plans.apply(lambda p, s=system: p[s])
            self.steps.append(
                command.local.Command(
                    f"{name}-{system.replace('/', '-')}",
                    create=PUBLISH,
                    update=PUBLISH,
                    environment={PUBLISH_ENV: plan, SIGNING_KEY_ENV: secret},
                    logging=command.local.Logging.STDERR,  # stdout is the JSON report, not for the log
                    opts=pulumi.ResourceOptions(parent=self),
                )
            )
        self.register_outputs({})
