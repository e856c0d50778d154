"""Tier 2: etcd snapshots and rebuilds in the program, under Pulumi mocks with moto's S3."""

from __future__ import annotations

import json

import boto3
import pulumi
import pytest
from moto import mock_aws

from flakefleet.plan.contract import PLAN_ENV, DeliveryPlan
from flakefleet.plan.specs import SERVER_TOKEN
from tests.conftest import require_tool
from tests.harness import SIGNING_KEY, FleetMocks, RecordingMonitor, reaches, read_stack_file, run_program, run_stack

COMMAND = "command:local:Command"
OLD_BUCKET = "ff-staging-old-snapshots"


@pytest.fixture(autouse=True)
def nix_present():
    require_tool("nix")


def plans(run) -> dict[str, DeliveryPlan]:
    return {r.name.split("-deliver-", 1)[1]: DeliveryPlan.from_json(r.inputs["environment"][PLAN_ENV])
            for r in run.of_type(COMMAND) if PLAN_ENV in r.inputs.get("environment", {})}


def snapshot_settings(plan: DeliveryPlan) -> dict | None:
    f = next((f for f in plan.files if f.path.endswith("60-flakefleet-snapshots.yaml")), None)
    return json.loads(f.content) if f else None


def test_servers_snapshot_to_their_cluster_folder_in_s3():
    for name, plan in plans(run_stack("staging")).items():
        settings = snapshot_settings(plan)
        if name.startswith("cp-"):
            assert settings == {"etcd-snapshot-schedule-cron": "0 */6 * * *", "etcd-snapshot-retention": 28,
                                "etcd-s3": True, "etcd-s3-bucket": "ff-staging-snapshots-bkt",
                                "etcd-s3-region": "eu-west-1", "etcd-s3-folder": "ff-staging"}
        else:
            assert settings is None


def test_bring_your_own_servers_keep_local_snapshots_only():
    settings = snapshot_settings(plans(run_stack("local"))["cp-0"])
    assert settings == {"etcd-snapshot-schedule-cron": "0 */6 * * *", "etcd-snapshot-retention": 28}


@pytest.fixture
def old_snapshots(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket=OLD_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        for name in ("etcd-snapshot-cp-0-1790000000", "etcd-snapshot-cp-1-1790021600"):
            s3.put_object(Bucket=OLD_BUCKET, Key=f"ff-staging/{name}", Body=b"snapshot")
        yield s3


def rebuild_config(bucket: str = OLD_BUCKET) -> dict:
    config = read_stack_file("staging")
    config["flakefleet:dr"] = json.dumps({"restore_from": "latest", "restore_bucket": bucket})
    config["flakefleet:server_token"] = "original-server-token"
    config[SIGNING_KEY] = "flakefleet-test-1:" + "A" * 86 + "=="
    return config


def test_rebuild_restores_the_latest_snapshot_on_the_first_control_plane(old_snapshots):
    run = run_program(rebuild_config(), stack="staging", secret_keys=[SIGNING_KEY, "flakefleet:server_token"])
    p = plans(run)
    assert "--cluster-reset-restore-path=etcd-snapshot-cp-1-1790021600" in p["cp-0"].restore_args
    assert p["cp-0"].restore_args[-6:] == ("--etcd-s3-bucket", OLD_BUCKET, "--etcd-s3-region", "eu-west-1",
                                           "--etcd-s3-folder", "ff-staging")
    assert p["cp-1"].restore_id == p["cp-2"].restore_id == p["cp-0"].restore_id
    assert p["cp-1"].restore_args == () and p["workers-0"].restore_id is None
    # The original token: the snapshot's bootstrap data is encrypted with it.
    cp0 = next(r for r in run.of_type(COMMAND) if r.name.endswith("-deliver-cp-0"))
    assert cp0.inputs["environment"][SERVER_TOKEN[1]] == "original-server-token"
    assert "environment" in cp0.secret_inputs
    stale = next(r for r in run.of_type(COMMAND) if r.name.endswith("-stale-nodes"))
    delivered = {r.urn for r in run.of_type(COMMAND) if PLAN_ENV in r.inputs.get("environment", {})}
    assert all(reaches(run, stale.urn, urn) for urn in delivered)  # after every delivery
    assert json.loads(stale.inputs["environment"]["FLAKEFLEET_PRUNE"])["keep"] == sorted(run.exports["nodes"])


def test_rebuild_from_a_missing_bucket_stops_before_any_resource(old_snapshots):
    monitor = RecordingMonitor(FleetMocks())
    with pytest.raises(pulumi.RunError) as err:
        run_program(rebuild_config("no-such-bucket"), stack="staging", monitor=monitor,
                    secret_keys=[SIGNING_KEY, "flakefleet:server_token"])
    assert str(err.value) == "flakefleet:dr.restore_from: bucket no-such-bucket does not exist (or is in another account)"
    assert monitor.records == []


def test_no_stale_node_clean_up_without_a_rebuild():
    run = run_stack("staging")
    assert not [r for r in run.of_type(COMMAND) if r.name.endswith("-stale-nodes")]
    assert all(p.restore_id is None for p in plans(run).values())
