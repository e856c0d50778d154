"""An S3 bucket with the security baseline built in: private, TLS-only, versioned, encrypted, expiring old versions."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components import resolved

# A statement factory gets the bucket ARN and the account id, and returns extra policy statements.
StatementFactory = Callable[[str, str | None], list[dict]]


@dataclass(frozen=True)
class SecureBucketArgs:
    """A private, TLS-only, versioned, encrypted bucket."""

    noncurrent_days: int
    """Days a noncurrent object version is kept before expiry."""
    force_destroy: bool = False
    """Whether `pulumi destroy` may delete a non-empty bucket."""
    expire_days: int | None = None
    """Days after which current objects expire (logs); None keeps them."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags for every taggable child."""
    extra_statements: StatementFactory | None = None
    """Further bucket-policy statements (e.g. log delivery), given the bucket ARN and `account_id`."""
    account_id: pulumi.Input[str] | None = None
    """Account id handed to `extra_statements`, for confused-deputy conditions."""


def deny_insecure_transport(bucket_arn: str) -> dict:
    """The CIS AWS 2.1.1 statement: refuse every request that is not over TLS."""
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


class SecureBucket(pulumi.ComponentResource):
    """An S3 bucket with all four public-access blocks, owner-enforced objects, SSE, versioning and TLS-only policy."""

    bucket: pulumi.Output[str]
    """The bucket's name."""
    arn: pulumi.Output[str]
    """The bucket's ARN."""

    def __init__(self, name: str, args: SecureBucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("flakefleet:index:SecureBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(name, force_destroy=args.force_destroy, tags=dict(args.tags), opts=child)
        blocks = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},  # ACLs off: the policy alone grants access
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=bucket.id, versioning_configuration={"status": "Enabled"}, opts=child
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}, "bucket_key_enabled": True}],
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=[
                {
                    "id": "expire-noncurrent-versions",
                    "status": "Enabled",
                    "filter": {},
                    "noncurrent_version_expiration": {"noncurrent_days": args.noncurrent_days},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 7},
                    **({"expiration": {"days": args.expire_days}} if args.expire_days else {}),
                }
            ],
            # S3 refuses lifecycle rules on noncurrent versions until versioning is on.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        extra = args.extra_statements or (lambda _arn, _account: [])
        policy = resolved(arn=bucket.arn, account=args.account_id).apply(
            lambda v: json.dumps(
                {"Version": "2012-10-17", "Statement": [deny_insecure_transport(v["arn"]), *extra(v["arn"], v["account"])]}
            )
        )
        aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket.id,
            policy=policy,
            # S3 rejects concurrent configuration changes on one bucket; the policy goes last.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[blocks, ownership]),
        )
        self.bucket = bucket.bucket
        self.arn = bucket.arn
        self.register_outputs({"bucket": self.bucket, "arn": self.arn})
