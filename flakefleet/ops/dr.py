"""Disaster recovery: the cluster's etcd snapshots in S3, and choosing a restore point.

    flakefleet dr list   --stack S [--json]        # bucket, cluster and region from the stack
    flakefleet dr list   --bucket B --cluster C [--region R]
    flakefleet dr verify --stack S NAME
    flakefleet dr pick   --stack S latest|NAME

k3s writes snapshots (`--etcd-s3`) to `s3://<bucket>/<cluster>/<name>`. Credentials come from
the usual AWS chain (profile, environment, instance profile); flakefleet never stores keys.
Every failure is one line saying what is missing: the bucket, a snapshot, or access.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from flakefleet.cluster.restore import PruneFailed, prune
from flakefleet.plan.contract import IDENTITY_ENV, PRUNE_PLAN_ENV, PrunePlan
from flakefleet.common.cli import CommandError, add_json, main_of, print_json, required_env
from flakefleet.config.stackfile import STACKS
from flakefleet.common.outputs import add_state_arguments, read_outputs

LATEST = "latest"


class DrError(Exception):
    """A disaster-recovery step that cannot go on; the message says why, in one line."""


@dataclass(frozen=True)
class Snapshot:
    """One etcd snapshot object."""

    name: str  # what k3s' --cluster-reset-restore-path takes
    key: str
    size: int
    modified: datetime

    def age(self, now: datetime) -> str:
        """Age for people: 3d4h, 5h12m, 7m."""
        minutes = int((now - self.modified).total_seconds() // 60)
        days, hours = divmod(minutes // 60, 24)
        if days:
            return f"{days}d{hours}h"
        return f"{hours}h{minutes % 60}m" if hours else f"{minutes}m"


def _explain(err: Exception, bucket: str) -> DrError:
    if isinstance(err, NoCredentialsError):
        return DrError("no AWS credentials: configure a profile, the environment, or run where an instance profile applies")
    if isinstance(err, ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):
            return DrError(f"bucket {bucket} does not exist (or is in another account)")
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            return DrError(f"access to bucket {bucket} denied: the caller needs s3:ListBucket and s3:GetObject on it")
        return DrError(f"S3 error on bucket {bucket}: {code or err}")
    return DrError(f"cannot reach S3 for bucket {bucket}: {err}")


def list_snapshots(bucket: str, cluster: str, client=None) -> list[Snapshot]:
    """The cluster's snapshots, newest first."""
    client = client or boto3.client("s3")
    prefix = f"{cluster}/"
    snapshots = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix):]
                if name and "/" not in name and not name.endswith(".metadata"):
                    snapshots.append(Snapshot(name, obj["Key"], obj["Size"], obj["LastModified"]))
    except (ClientError, BotoCoreError) as err:
        raise _explain(err, bucket) from None
    return sorted(snapshots, key=lambda s: (s.modified, s.name), reverse=True)


def pick(bucket: str, cluster: str, point: str, client=None) -> Snapshot:
    """The snapshot to restore: the newest for `latest`, else the one named."""
    snapshots = list_snapshots(bucket, cluster, client)
    if not snapshots:
        raise DrError(f"no snapshot of cluster {cluster} in s3://{bucket}/{cluster}/")
    if point == LATEST:
        return snapshots[0]
    for snap in snapshots:
        if snap.name == point:
            return snap
    raise DrError(f"no snapshot named {point} in s3://{bucket}/{cluster}/ (newest: {snapshots[0].name})")


def verify(bucket: str, cluster: str, name: str, client=None) -> Snapshot:
    """Check one snapshot is there, readable and not empty."""
    client = client or boto3.client("s3")
    key = f"{cluster}/{name}"
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] > 0:
            client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].read()  # readable, not just listed
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
            raise DrError(f"no snapshot named {name} in s3://{bucket}/{cluster}/") from None
        raise _explain(err, bucket) from None
    except BotoCoreError as err:
        raise _explain(err, bucket) from None
    if head["ContentLength"] == 0:
        raise DrError(f"snapshot {name} in s3://{bucket}/{cluster}/ is empty")
    return Snapshot(name, key, head["ContentLength"], head["LastModified"])


def configure(parser) -> None:
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,verify,pick,prune}")
    for name, help_text in (("list", "snapshots with age and size"), ("verify", "check one snapshot"),
                            ("pick", "the restore point for latest or a name")):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--bucket", metavar="B", help="the snapshot bucket (default: the stack's `buckets.snapshots` output)")
        p.add_argument("--cluster", metavar="C", help="the cluster's name (default: the stack file's cluster.name)")
        p.add_argument("--region", metavar="R", help="the bucket's region (default: the stack file's aws:region)")
        add_state_arguments(p, stacks_dir=STACKS)
        if name == "list":
            add_json(p)
        else:
            p.add_argument("snapshot", help="latest or a snapshot name" if name == "pick" else "a snapshot name")
    sub.add_parser("prune", help="after a rebuild: delete Nodes of hosts the stack does not have (reads FLAKEFLEET_PRUNE)")


def where(args) -> tuple[str, str, str | None]:
    """(bucket, cluster, region): the flags, else the stack's (its file, its outputs)."""
    bucket, cluster, region = args.bucket, args.cluster, args.region
    if not (bucket and cluster) and not (args.stack or args.outputs):
        raise CommandError("say which snapshots: --stack S (its file and outputs say), or --bucket B and --cluster C")
    if args.stack and not (cluster and region):
        from flakefleet.plan.load import load_stack
        from flakefleet.config import ConfigError

        try:
            cfg, _ = load_stack(args.stack, args.stacks_dir)
        except ConfigError as err:
            raise CommandError(*(f"stack {args.stack}: {p}" for p in err.problems)) from None
        cluster, region = cluster or cfg.cluster.name, region or cfg.region
    if not cluster:
        raise CommandError("--cluster C is needed with --outputs alone (the outputs do not name the cluster)")
    if not bucket:
        outputs = read_outputs(args.outputs, args.stack)
        bucket = outputs.table("buckets").get("snapshots")
        if not bucket:
            raise CommandError(outputs.not_yet(args.stack) if not outputs.updated else
                               f"{outputs.source}: no snapshot bucket (`buckets.snapshots`; storage.enabled: false?)")
    return bucket, cluster, region


def run(args) -> int:
    if args.command == "prune":
        try:
            stale = prune(PrunePlan.from_json(required_env(PRUNE_PLAN_ENV)), os.environ.get(IDENTITY_ENV))
        except PruneFailed as err:
            raise CommandError(str(err)) from None
        print(f"deleted stale nodes: {', '.join(stale) or 'none'}")
        return 0
    bucket, cluster, region = where(args)
    client = boto3.client("s3", region_name=region) if region else None
    now = datetime.now(timezone.utc)
    try:
        if args.command == "list":
            snapshots = list_snapshots(bucket, cluster, client)
            if not snapshots:
                raise DrError(f"no snapshot of cluster {cluster} in s3://{bucket}/{cluster}/")
            if args.json:
                print_json([{"name": s.name, "key": s.key, "size": s.size, "modified": s.modified.isoformat(),
                             "age": s.age(now)} for s in snapshots])
                return 0
            print(f"{'snapshot':<60} {'age':>8} {'size':>12}")
            for s in snapshots:
                print(f"{s.name:<60} {s.age(now):>8} {s.size:>12,}")
        elif args.command == "verify":
            s = verify(bucket, cluster, args.snapshot, client)
            print(f"ok: {s.name} ({s.size:,} bytes, {s.age(now)} old)")
        else:
            print(pick(bucket, cluster, args.snapshot, client).name)
    except DrError as err:
        raise CommandError(str(err)) from None
    return 0


main = main_of("flakefleet dr", configure, run, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
