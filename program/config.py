"""The stack's config, read once from Pulumi and validated whole, then planned, before any resource."""

from __future__ import annotations

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env, get_config_secret_keys_env, is_config_secret

from flakefleet.config import ConfigError, StackConfig, parse_stack_config
from flakefleet.plan.iam import bucket_arn
from flakefleet.plan.inventory import Inventory, plan_inventory


def load_stack() -> tuple[StackConfig, Inventory]:
    """The validated config and its inventory; every problem is reported at once, without a traceback."""
    raw = {**get_config_env(), **CONFIG.get()}
    secret_keys = {*get_config_secret_keys_env(), *(key for key in raw if is_config_secret(key))}
    region = pulumi.Config("aws").get("region")
    try:
        cfg = parse_stack_config(raw, region, secret_keys)
        return cfg, plan_inventory(cfg)
    except ConfigError as err:
        # RunError ends the program with just this message: one line per problem, no stack trace.
        raise pulumi.RunError(
            f"invalid configuration for stack {pulumi.get_stack()}:\n  " + "\n  ".join(err.problems)
        ) from None


def cache_arn(cfg: StackConfig, storage) -> pulumi.Input[str] | None:
    """The binary cache the hosts substitute from, as the instance profiles are granted it: the
    bucket `delivery.cache.bucket` names when set (hosts read that one), else the stack's own."""
    if cfg.delivery.cache.bucket:
        return bucket_arn(cfg.delivery.cache.bucket, cfg.cache_region or cfg.region)
    return storage.cache_arn if storage else None
