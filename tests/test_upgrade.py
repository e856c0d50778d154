"""Tier 1 and 2: a change of k3s version under Kubernetes' version skew policy
(flakefleet/preview/upgrade.py), table by table, and in the program: refused before any
resource, or announced with its order."""

from __future__ import annotations

import pulumi
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flakefleet.preview.manifest import Manifest
from flakefleet.preview.upgrade import KEY, parse, problems, upgrade
from tests.harness import FleetMocks, RecordingMonitor, read_stack_file, run_program, run_stack

ROLES = {"cp-0": "control-plane", "cp-1": "control-plane", "w-0": "worker", "w-1": "worker"}
ORDER = ["cp-0", "cp-1", "w-0", "w-1"]


def fleet(cp: str, workers: str | None = None) -> dict:
    return {h: parse(cp if ROLES[h] == "control-plane" else (workers or cp)) for h in ROLES}


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (("1.33.7+k3s3",), ("1.33.9+k3s1",), []),  # a patch release
        (("1.33.7+k3s3",), ("1.34.3+k3s3",), []),  # one minor, from a safe etcd
        (("1.32.11+k3s3",), ("1.33.7+k3s3",), []),
        (("1.33.7+k3s3", "1.32.11+k3s3"), ("1.34.3+k3s3", "1.33.7+k3s3"), []),  # workers one behind
        (("1.34.3+k3s3",), ("1.33.7+k3s3",), ["would go back from 1.34.3+k3s3 to 1.33.7+k3s3 on cp-0, cp-1, w-0, w-1"]),
        (("1.33.9+k3s1",), ("1.33.7+k3s3",), ["would go back from 1.33.9+k3s1 to 1.33.7+k3s3"]),  # a patch too
        (("1.31.4+k3s1",), ("1.33.7+k3s3",), ["k3s 1.31 -> 1.33 on cp-0, cp-1, w-0, w-1 skips 1.32"]),
        (("1.32.11+k3s3",), ("1.34.3+k3s3",), ["k3s 1.32 -> 1.34 on cp-0, cp-1, w-0, w-1 skips 1.33"]),
        (("1.33.7+k3s3",), ("1.33.7+k3s3", "1.34.3+k3s3"),
         ["workers w-0, w-1 would run k3s 1.34 while a control plane runs 1.33"]),
        (("1.34.3+k3s3", "1.31.4+k3s1"), ("1.35.0+k3s3", "1.31.4+k3s1"),
         ["workers w-0, w-1 would run k3s 1.31, more than three minor versions behind the API server's 1.35"]),
        (("1.33.6+k3s1",), ("1.34.3+k3s3",), ["k3s 1.33.6+k3s1 -> 1.34.3+k3s3 on cp-0, cp-1 moves etcd from 3.5 to 3.6",
                                               "update to 1.33.7+k3s3 or later (a flake.lock bump) first"]),
        (("1.33.6+k3s1",), ("1.33.13+k3s1",), ["moves etcd from 3.5 to 3.6"]),  # 1.33 itself moved to etcd 3.6
        (("1.33.7+k3s2",), ("1.34.3+k3s3",), ["moves etcd from 3.5 to 3.6"]),  # before the release nixpkgs shipped
    ],
    ids=["patch", "minor", "minor-1.32", "workers-behind", "downgrade", "patch-downgrade", "skip", "skip-1.33",
         "workers-ahead", "workers-too-far-behind", "etcd-unsafe", "etcd-within-1.33", "etcd-k3s2"],
)
def test_the_skew_rules(before, after, expected):
    found = problems(fleet(*before), fleet(*after), ROLES)
    assert len(found) == (1 if expected else 0), found
    for part in expected:
        assert part in found[0]
    assert all(line.startswith(f"{KEY}: ") and "\n" not in line for line in found)


versions = st.builds(lambda m, p, r: parse(f"1.{m}.{p}+k3s{r}"), st.integers(34, 40), st.integers(0, 12),
                     st.integers(1, 3))


@given(versions, st.integers(0, 1), st.integers(0, 12))
def test_one_minor_up_or_a_patch_with_workers_alongside_is_always_allowed(before, step, patch):
    after = parse(f"1.{before.minor + step}.{patch if step else max(patch, before.patch)}+k3s{before.release}")
    same = {h: before for h in ROLES}
    assert problems(same, {h: after for h in ROLES}, ROLES) == []


@given(versions, versions)
def test_going_back_is_always_refused_and_named_once(a, b):
    high, low = max(a, b), min(a, b)
    found = problems({h: high for h in ROLES}, {h: low for h in ROLES}, ROLES)
    assert bool(found) == (high != low)
    assert sum("would go back" in line for line in found) == (1 if high != low else 0)


def test_every_problem_is_one_line_all_at_once():
    found = problems(fleet("1.31.4+k3s1"), fleet("1.34.3+k3s3", "1.35.0+k3s3"), ROLES)
    assert [line.split(": ", 2)[1].split(" ")[0] for line in found] == ["k3s", "workers", "k3s"]


def test_an_upgrade_names_servers_first_then_workers():
    planned = upgrade(fleet("1.33.7+k3s3"), fleet("1.34.3+k3s3"), ROLES, ORDER)
    assert planned.text() == "k3s 1.33 -> 1.34: servers first (cp-0, cp-1), then workers"
    assert upgrade(fleet("1.33.7+k3s3"), fleet("1.33.9+k3s1"), ROLES, ORDER) is None  # a patch is no upgrade
    assert upgrade(fleet("1.33.7+k3s3"), {**fleet("1.33.7+k3s3"), "cp-0": parse("1.34.3+k3s3")}, ROLES, ORDER).text() \
        == "k3s 1.33 -> 1.34: servers first (cp-0), no workers"


def last_update_with_k3s(version: str) -> dict:
    """The local stack's last update as it would be had its systems carried `version` of k3s."""
    first = run_stack("local")
    then = {key: Manifest.unpack(packed) for key, packed in first.exports["system_manifests"].items()}
    then = {k: Manifest(system="0ld", packages={**m.packages, "k3s": {version: "0ld"}}, units=m.units, boot=m.boot,
                        derivations=m.derivations) for k, m in then.items()}
    return {"system_manifests": {k: m.pack() for k, m in then.items()}, "nodes": first.exports["nodes"],
            "boot": first.exports["boot"]}


def test_a_skipped_minor_is_refused_before_any_resource():
    """The stand-in systems carry k3s 1.31.2+k3s1; the last update ran 1.29: refused, nothing registered."""
    monitor = RecordingMonitor(FleetMocks(previous_outputs=last_update_with_k3s("1.29.5+k3s1")))
    with pytest.raises(pulumi.RunError) as err:
        run_program(read_stack_file("local"), stack="local", preview=True, monitor=monitor)
    assert str(err.value) == (f"{KEY}: k3s 1.29 -> 1.31 on cp-0, worker-0, worker-1 skips 1.30: Kubernetes upgrades one "
                              "minor version at a time (set k3s_channel to 1.30, pulumi up, then the next)")
    assert list(monitor.resources.values()) == []


def test_an_allowed_upgrade_is_announced_with_its_order_and_a_snapshot_first():
    from flakefleet.plan.contract import PLAN_ENV, DeliveryPlan

    logged: list[str] = []
    original = pulumi.log.info
    pulumi.log.info = lambda message, *a, **k: logged.append(message)
    try:
        run = run_program(read_stack_file("local"), stack="local", preview=True,
                          monitor=RecordingMonitor(FleetMocks(previous_outputs=last_update_with_k3s("1.30.6+k3s1"))))
    finally:
        pulumi.log.info = original
    assert "k3s 1.30 -> 1.31: servers first (cp-0), then workers" in logged
    plans = {DeliveryPlan.from_json(r.inputs["environment"][PLAN_ENV]).host: DeliveryPlan.from_json(
        r.inputs["environment"][PLAN_ENV]) for r in run.of_type("command:local:Command")
        if PLAN_ENV in r.inputs.get("environment", {})}
    assert {h: p.snapshot_before for h, p in plans.items()} == {
        "cp-0": "flakefleet-pre-k3s-1-31", "worker-0": "", "worker-1": ""}
    assert run.exports["upgrade_snapshot"] == {"cp-0": "flakefleet-pre-k3s-1-31"}
    # No upgrade (the same k3s as last time): no snapshot.
    assert run_stack("local").exports["upgrade_snapshot"] == {}


def test_a_cni_switch_and_a_skipped_minor_are_refused_in_one_run():
    previous = {**last_update_with_k3s("1.29.5+k3s1"), "cluster_cni": "cilium"}
    monitor = RecordingMonitor(FleetMocks(previous_outputs=previous))
    with pytest.raises(pulumi.RunError) as err:
        run_program(read_stack_file("local"), stack="local", preview=True, monitor=monitor)
    lines = str(err.value).splitlines()
    assert [line.split(":", 2)[1] for line in lines] == ["cluster.cni", "cluster.k3s_channel"]
    assert list(monitor.resources.values()) == []
