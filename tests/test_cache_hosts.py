"""Tier 4: the binary cache and where systems are built, against test hosts and a moto bucket.

The deployer publishes a pool's system once (signed, to the bucket: moto), the hosts substitute
it over HTTP from that bucket's layout (loopback) and refuse what is not signed by a key they
trust; `build: target` builds on the host; a named builder builds once for the deployer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flakefleet.plan.contract import Builder
from flakefleet.delivery.build import realise
from flakefleet.delivery.cache import CACHE_INFO, closure_of, hash_part, publish
from flakefleet.plan.contract import PublishPlan
from flakefleet.delivery.runner import HostDelivery as Delivery
from flakefleet.nixos.evaluate import evaluate_systems
from tests.cachehosts import REGION, s3_bucket, served
from tests.conftest import STANDIN_FLAKE, require
from tests.test_delivery_hosts import deliver, plan_for, report, runner_env, spec
from tests.testhosts import make_fleet, prerequisites, running_fleet

BUCKET = "fleet-cache"
SERVER_ADDRESS = "127.0.0.70"


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    require(not prerequisites(), f"test hosts need: {', '.join(prerequisites())}")
    specs = {v: spec(v) for v in ("c1", "c2", "c3")}
    evaluated, _ = evaluate_systems(Path(STANDIN_FLAKE), specs, tmp_path_factory.mktemp("cache"))
    return evaluated


@pytest.fixture
def fleet(tmp_path):
    with running_fleet(tmp_path / "fleet", {f"c{i}": f"127.0.0.{71 + i}" for i in range(3)}) as (fleet, _):
        yield fleet


@pytest.fixture
def bucket():
    with s3_bucket(BUCKET) as client:
        yield client


def publish_plan(system, **overrides) -> PublishPlan:
    fields = dict(pool="workers", system=system.out, drv=system.drv, bucket=BUCKET, region=REGION)
    fields.update(overrides)
    return PublishPlan(**fields)


def keys_in(client) -> set[str]:
    return {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def other_key(tmp_path: Path) -> str:
    """A signing key no test host trusts."""
    return make_fleet(tmp_path / "stranger").signing_secret


def test_publish_uploads_each_path_once_signed(systems, bucket, tmp_path):
    fleet = make_fleet(tmp_path / "keys")
    system = systems["c1"]
    first = publish(publish_plan(system), fleet.signing_secret, bucket)
    closure = closure_of(system.out)
    assert first.closure == len(closure) and first.uploaded == len(closure) and first.uploaded_bytes > 0
    keys = keys_in(bucket)
    assert {f"{hash_part(p)}.narinfo" for p in closure} <= keys and "nix-cache-info" in keys
    narinfo = bucket.get_object(Bucket=BUCKET, Key=f"{hash_part(system.out)}.narinfo")["Body"].read().decode()
    assert f"StorePath: {system.out}" in narinfo and "Sig: flakefleet-test-1:" in narinfo
    nar = narinfo.split("URL: ", 1)[1].split()[0]
    assert nar in keys  # the nar the narinfo names is there
    assert bucket.get_object(Bucket=BUCKET, Key="nix-cache-info")["Body"].read().decode() == CACHE_INFO
    # Published again (an update with the same system, or another stack sharing the bucket): nothing sent.
    again = publish(publish_plan(system), fleet.signing_secret, bucket)
    assert (again.uploaded, again.uploaded_bytes, again.in_cache) == (0, 0, len(closure))


def test_publish_skips_what_an_upstream_cache_holds(systems, bucket, tmp_path):
    fleet = make_fleet(tmp_path / "keys")
    system = systems["c2"]
    realise(system.drv, system.out)
    closure = closure_of(system.out)
    held = [p for p in closure if p != system.out]  # upstream has everything but the system itself
    with s3_bucket("upstream") as upstream_client:
        for path in held:
            upstream_client.put_object(Bucket="upstream", Key=f"{hash_part(path)}.narinfo", Body=b"StorePath: x\n")
        with served(upstream_client, "upstream", SERVER_ADDRESS) as upstream:
            result = publish(publish_plan(system, upstreams=(upstream.url,)), fleet.signing_secret, bucket)
    assert (result.upstream, result.uploaded) == (len(held), 1)
    assert {k for k in keys_in(bucket) if k.endswith(".narinfo")} == {f"{hash_part(system.out)}.narinfo"}


def test_an_unreachable_upstream_means_upload_not_skip(systems, bucket, tmp_path):
    fleet = make_fleet(tmp_path / "keys")
    system = systems["c3"]
    # Nothing listens on this loopback port: the upstream cannot be asked, so nothing is assumed held.
    result = publish(publish_plan(system, upstreams=(f"http://{SERVER_ADDRESS}:9",)), fleet.signing_secret, bucket)
    assert result.uploaded == result.closure and result.upstream == 0
    assert any("did not answer" in note for note in result.notes)


def test_hosts_substitute_from_the_cache_and_the_deployer_sends_no_store_bytes(systems, fleet, bucket):
    system = systems["c1"]
    published = publish(publish_plan(system), fleet.signing_secret, bucket)
    with served(bucket, BUCKET, SERVER_ADDRESS) as cache:
        procs = [deliver(fleet, plan_for(fleet, h, system, substituters=(cache.url,))) for h in fleet.hosts]
        for host, proc in zip(fleet.hosts, procs):
            assert proc.returncode == 0, proc.stderr
            assert report(proc)["bytes_copied"] == 0 and "from the binary cache" in proc.stderr
            assert host.current_system() == system.out
        # Each host fetched the whole closure from the cache itself (it was uploaded once).
        assert cache.bytes_served >= len(fleet.hosts) * published.uploaded_bytes


def test_a_path_signed_by_an_untrusted_key_is_refused_by_the_host(systems, fleet, bucket, tmp_path):
    system = systems["c2"]
    publish(publish_plan(system), other_key(tmp_path), bucket)  # the wrong key
    host = fleet.hosts[0]
    with served(bucket, BUCKET, SERVER_ADDRESS) as cache:
        proc = deliver(fleet, plan_for(fleet, host, system, substituters=(cache.url,)))
    assert proc.returncode != 0
    assert "could not fetch" in proc.stderr and "nothing was activated" in proc.stderr
    assert "is not signed by any of the keys in 'trusted-public-keys'" in proc.stderr  # the host's Nix refused it
    assert Path(system.out).name not in host.store_paths() and host.current_system() != system.out


def test_build_on_target_builds_on_the_host(systems, fleet):
    system = systems["c3"]
    host = fleet.hosts[1]
    proc = deliver(fleet, plan_for(fleet, host, system, build="target"))
    assert proc.returncode == 0, proc.stderr
    assert "built" in proc.stderr and "on the host itself" in proc.stderr
    assert report(proc)["bytes_copied"] == 0
    assert host.current_system() == system.out
    assert Path(system.drv).name in host.store_paths()  # the derivation went over, the result was built there


def test_a_builder_builds_once_and_the_result_is_published(systems, fleet, bucket):
    system = systems["c2"]
    builder_host = fleet.hosts[2]
    builder = Builder(builder_host.name, builder_host.address, builder_host.port, "root", builder_host.host_key,
                      str(fleet.client_key))
    result = publish(publish_plan(system, builder=builder), fleet.signing_secret, bucket)
    assert result.uploaded == result.closure
    assert Path(system.out).name in builder_host.store_paths()  # built there (and fetched back once)
    assert f"{hash_part(system.out)}.narinfo" in keys_in(bucket)


def test_the_publish_runner_reports_json_and_fails_in_one_line(systems, bucket, tmp_path):
    from tests.testhosts import run_as_deployer

    fleet = make_fleet(tmp_path / "keys")
    # Build once, nothing to upload, and no AWS region (a bring-your-own stack): no S3 client at all.
    plan = publish_plan(systems["c1"], bucket=None, region="")
    proc = run_as_deployer(fleet, ["flakefleet.delivery.cache"], {"FLAKEFLEET_PUBLISH": plan.to_json()})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["uploaded"] == 0
    bad = publish_plan(systems["c1"], drv="/nix/store/00000000000000000000000000000000-missing.drv", bucket=None)
    proc = run_as_deployer(fleet, ["flakefleet.delivery.cache"], {"FLAKEFLEET_PUBLISH": bad.to_json()})
    assert proc.returncode == 1 and proc.stderr.startswith("publish: building") and "Traceback" not in proc.stderr


def test_a_target_pool_builds_once_and_its_other_hosts_substitute(systems, fleet, bucket):
    system = systems["c1"]
    first, second = fleet.hosts[0], fleet.hosts[1]
    # The pool's first host builds and its runner pushes the result (in this process: the moto bucket).
    plan = plan_for(fleet, first, system, build="target", push={"bucket": BUCKET, "region": REGION})
    run = Delivery(plan, runner_env(fleet, plan))
    try:
        assert run.deliver().outcome == "activated"
    finally:
        run.close()
    assert Path(system.drv).name in first.store_paths()  # built there
    assert f"{hash_part(system.out)}.narinfo" in keys_in(bucket)
    with served(bucket, BUCKET, SERVER_ADDRESS) as cache:
        proc = deliver(fleet, plan_for(fleet, second, system, build="target", await_build=True,
                                       substituters=(cache.url,)))
    assert proc.returncode == 0, proc.stderr
    assert "built once for the pool" in proc.stderr and report(proc)["bytes_copied"] == 0
    assert second.current_system() == system.out
    assert Path(system.drv).name not in second.store_paths()  # substituted, not built again


def test_a_host_waiting_for_its_pools_build_gives_up_within_its_bound(systems, fleet, bucket):
    system = systems["c3"]  # never published
    with served(bucket, BUCKET, SERVER_ADDRESS) as cache:
        proc = deliver(fleet, plan_for(fleet, fleet.hosts[2], system, build="target", await_build=True,
                                       substituters=(cache.url,), build_wait_s=2))
    assert proc.returncode == 1
    assert "did not appear in" in proc.stderr and "the pool's first host builds it" in proc.stderr
    assert fleet.hosts[2].current_system() != system.out
