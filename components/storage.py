"""The fleet's buckets: the Nix binary cache and the etcd snapshots, each a SecureBucket."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi

from components.secure_bucket import SecureBucket, SecureBucketArgs
from flakefleet.config import StorageConfig


@dataclass(frozen=True)
class StorageArgs:
    """The fleet's buckets."""

    config: StorageConfig
    """The validated `storage` stack key."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags for every taggable child."""


class Storage(pulumi.ComponentResource):
    """The Nix binary-cache bucket and the etcd snapshot bucket."""

    cache_bucket: pulumi.Output[str]
    """Name of the Nix binary-cache bucket (every node reads it)."""
    cache_arn: pulumi.Output[str]
    """ARN of the Nix binary-cache bucket."""
    snapshot_bucket: pulumi.Output[str]
    """Name of the etcd snapshot bucket (control planes write `<cluster>/` in it)."""
    snapshot_arn: pulumi.Output[str]
    """ARN of the etcd snapshot bucket."""

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("flakefleet:index:Storage", name, None, opts)
        cfg = args.config
        cache, snapshots = (
            SecureBucket(
                f"{name}-{kind}",
                SecureBucketArgs(noncurrent_days=days, force_destroy=cfg.force_destroy, tags=args.tags),
                pulumi.ResourceOptions(parent=self),
            )
            for kind, days in (("cache", cfg.cache_noncurrent_days), ("snapshots", cfg.snapshot_noncurrent_days))
        )
        self.cache_bucket, self.cache_arn = cache.bucket, cache.arn
        self.snapshot_bucket, self.snapshot_arn = snapshots.bucket, snapshots.arn
        self.register_outputs(
            {
                "cache_bucket": self.cache_bucket,
                "cache_arn": self.cache_arn,
                "snapshot_bucket": self.snapshot_bucket,
                "snapshot_arn": self.snapshot_arn,
            }
        )
