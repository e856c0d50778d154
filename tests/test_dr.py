"""Tier 1: the disaster-recovery commands against moto's S3."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3
import pytest
from moto import mock_aws

from flakefleet.ops import dr
from flakefleet.__main__ import main as cli

BUCKET, CLUSTER = "ff-prod-snapshots-abc", "ff-prod"


@pytest.fixture
def s3(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


def put(client, name, size=1024, cluster=CLUSTER):
    client.put_object(Bucket=BUCKET, Key=f"{cluster}/{name}", Body=b"x" * size)


def test_list_newest_first_with_size(s3):
    put(s3, "etcd-snapshot-cp-0-1790000000", 2048)
    put(s3, "etcd-snapshot-cp-1-1790003600", 4096)
    put(s3, "etcd-snapshot-cp-0-1790000000.metadata", 10)  # k3s' metadata sidecars are not snapshots
    put(s3, "etcd-snapshot-other", 1, cluster="ff-dev")  # another cluster's folder
    snaps = dr.list_snapshots(BUCKET, CLUSTER, s3)
    assert [s.name for s in snaps] == ["etcd-snapshot-cp-1-1790003600", "etcd-snapshot-cp-0-1790000000"]
    assert [s.size for s in snaps] == [4096, 2048]


def test_pick_latest_and_by_name(s3):
    put(s3, "a")
    put(s3, "b")
    assert dr.pick(BUCKET, CLUSTER, "latest", s3).name == "b"
    assert dr.pick(BUCKET, CLUSTER, "a", s3).name == "a"
    with pytest.raises(dr.DrError, match=r"^no snapshot named c in s3://ff-prod-snapshots-abc/ff-prod/ \(newest: b\)$"):
        dr.pick(BUCKET, CLUSTER, "c", s3)


def test_no_snapshot_at_all(s3):
    with pytest.raises(dr.DrError, match=r"^no snapshot of cluster ff-prod in s3://ff-prod-snapshots-abc/ff-prod/$"):
        dr.pick(BUCKET, CLUSTER, "latest", s3)


def test_missing_bucket(s3):
    with pytest.raises(dr.DrError, match=r"^bucket nope does not exist \(or is in another account\)$"):
        dr.list_snapshots("nope", CLUSTER, s3)


def test_access_denied_is_explained():
    from botocore.exceptions import ClientError

    class Denied:
        def get_paginator(self, _):
            class P:
                def paginate(self, **_):
                    raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "ListObjectsV2")
            return P()

    with pytest.raises(dr.DrError, match="access to bucket b denied: the caller needs s3:ListBucket and s3:GetObject"):
        dr.list_snapshots("b", CLUSTER, Denied())


def test_verify(s3):
    put(s3, "good", 100)
    put(s3, "empty", 0)
    assert dr.verify(BUCKET, CLUSTER, "good", s3).size == 100
    with pytest.raises(dr.DrError, match="snapshot empty in s3://ff-prod-snapshots-abc/ff-prod/ is empty"):
        dr.verify(BUCKET, CLUSTER, "empty", s3)
    with pytest.raises(dr.DrError, match="no snapshot named gone"):
        dr.verify(BUCKET, CLUSTER, "gone", s3)


def test_age_for_people():
    now = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
    snap = lambda delta: dr.Snapshot("n", "k", 1, now - delta)  # noqa: E731
    assert [snap(d).age(now) for d in (timedelta(minutes=7), timedelta(hours=5, minutes=12), timedelta(days=3, hours=4))] \
        == ["7m", "5h12m", "3d4h"]


def test_cli(s3, capsys):
    put(s3, "etcd-snapshot-cp-0-1", 1234)
    assert cli(["dr", "list", "--bucket", BUCKET, "--cluster", CLUSTER]) == 0
    out = capsys.readouterr().out
    assert "etcd-snapshot-cp-0-1" in out and "1,234" in out
    assert cli(["dr", "pick", "--bucket", BUCKET, "--cluster", CLUSTER, "latest"]) == 0
    assert capsys.readouterr().out.strip() == "etcd-snapshot-cp-0-1"
    assert cli(["dr", "verify", "--bucket", "nope", "--cluster", CLUSTER, "x"]) == 1
    assert capsys.readouterr().err.strip() == "flakefleet dr: bucket nope does not exist (or is in another account)"
