"""A rebuild's snapshot, picked while the program runs so the preview names it."""

from __future__ import annotations

import boto3
import pulumi

from flakefleet.config import StackConfig
from flakefleet.ops import dr
from flakefleet.plan.rollout import RestorePoint


def plan_restore(cfg: StackConfig) -> RestorePoint | None:
    """The snapshot a rebuild restores (boto3, the deployer's credentials); problems stop the program."""
    dr_cfg = cfg.dr
    if dr_cfg.restore_from is None:
        return None
    folder = dr_cfg.restore_cluster or cfg.cluster.name
    region = dr_cfg.restore_region or cfg.region
    try:
        client = boto3.client("s3", region_name=region)
        snapshot = dr.pick(dr_cfg.restore_bucket, folder, dr_cfg.restore_from, client)
    except dr.DrError as err:
        raise pulumi.RunError(f"flakefleet:dr.restore_from: {err}") from None
    pulumi.log.info(f"restoring snapshot {snapshot.name} of {folder} from s3://{dr_cfg.restore_bucket}")
    return RestorePoint(dr_cfg.restore_bucket, folder, region, snapshot.name)
