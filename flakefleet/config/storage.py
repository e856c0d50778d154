"""`flakefleet:storage`: the S3 buckets for the Nix binary cache and etcd snapshots."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from flakefleet.config.base import Model

if TYPE_CHECKING:
    from flakefleet.config.parsed import Parsed


class StorageConfig(Model):
    """`flakefleet:storage` — the S3 buckets for the Nix binary cache and etcd snapshots."""

    enabled: bool = Field(True, description="Create the buckets. Default `true`; the local stack turns it off.")
    snapshot_noncurrent_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        30, description="Days an overwritten or deleted etcd snapshot version is kept. Default 30."
    )
    cache_noncurrent_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        7, description="Days an overwritten or deleted binary-cache object version is kept. Default 7."
    )
    force_destroy: bool = Field(
        False, description="Let `pulumi destroy` delete non-empty buckets. Default `false`; never in prod."
    )


def check(stack: Parsed) -> list[str]:
    """Buckets need a region (EC2 stacks are told so by the network's rules)."""
    if stack.storage.enabled and stack.region is None and stack.uses_ec2 is False:
        return ["aws:region: required when storage.enabled is true"]
    return []
