"""`flakefleet:dr`: etcd snapshots, and rebuilding a cluster from one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from flakefleet.config.base import NAMESPACE, DnsLabel, Model
from flakefleet.config.rules import bucket_problem, cron_problem, region_problem

if TYPE_CHECKING:
    from flakefleet.config.parsed import Parsed


class DrConfig(Model):
    """`flakefleet:dr` — etcd snapshots and rebuilding a cluster from one."""

    snapshot_schedule: str = Field(
        "0 */6 * * *",
        description="Cron schedule of etcd snapshots (k3s --etcd-snapshot-schedule-cron): five fields, quoted in "
        "YAML when it starts with `*`. Default every 6 hours.",
    )
    snapshot_retention: Annotated[int, Field(ge=1, le=1000)] = Field(
        28, description="Snapshots kept per control plane (k3s --etcd-snapshot-retention). Default 28 (7 days at 6 h)."
    )
    restore_from: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$")] | None = Field(
        None,
        description="Rebuild: `latest` or a snapshot name to restore when the cluster is created. Needs the original "
        "`flakefleet:server_token`. Default: none (a new, empty cluster).",
    )
    restore_bucket: str | None = Field(
        None,
        description="Bucket holding the snapshot to restore (the old stack's `buckets.snapshots` output). "
        "Required with `restore_from`.",
    )
    restore_cluster: DnsLabel | None = Field(
        None, description="Cluster name (snapshot folder) the snapshot was taken of. Default: `cluster.name`."
    )
    restore_region: str | None = Field(None, description="Region of `restore_bucket`. Default: `aws:region`.")


def check(stack: Parsed) -> list[str]:
    """A schedule k3s accepts; a restore names its bucket, runs on EC2 control planes, has the old token."""
    p = f"{NAMESPACE}:"
    dr = stack.dr
    problems = []
    if (why := cron_problem(dr.snapshot_schedule)) is not None:
        problems.append(f"{p}dr.snapshot_schedule: {why}")
    if dr.restore_bucket is not None and (why := bucket_problem(dr.restore_bucket)) is not None:
        problems.append(f"{p}dr.restore_bucket: {why}")
    if dr.restore_region is not None and (why := region_problem(dr.restore_region)) is not None:
        problems.append(f"{p}dr.restore_region: {why}")
    if dr.restore_from is None:
        return problems
    if dr.restore_bucket is None and stack.known("dr.restore_bucket"):
        problems.append(f"{p}dr.restore_from: needs dr.restore_bucket, the bucket holding the snapshot")
    providers = {pool.provider for i, pool in stack.valid_pools
                 if pool.role == "control-plane" and stack.known(f"pools[{i}].provider")}
    if providers and providers != {"ec2"}:
        problems.append(f"{p}dr.restore_from: restoring from S3 needs the control planes on EC2 (their instance profile "
                        "reads the snapshot; flakefleet stores no keys)")
    if "server_token" not in stack.secrets_given:
        problems.append(f"{p}dr.restore_from: needs {NAMESPACE}:server_token, the original cluster's server token "
                        "(pulumi stack output --show-secrets k3s_server_token on the old stack)")
    return problems
