"""Tier 3: delivery against real test hosts (sshd per loopback address, own /nix) with stand-in systems.

Copy, switch, health gate, rollback and faults: failing activation, host down, dropped
connection, and a deployer that disappears after activation (the host rolls itself back).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flakefleet.plan.contract import PLAN_ENV, ROLLED_BACK, SIGNING_KEY_ENV, UNREACHABLE, DeliveryPlan, FileSpec
from flakefleet.plan.contract import K3S_DROP_IN_PATH, PoolSpec
from flakefleet.nixos.evaluate import evaluate_systems
from tests.conftest import STANDIN_FLAKE, require
from tests.machines.image import prerequisites as machine_prerequisites
from tests.machines.machine import running_machines
from tests.testhosts import TestFleet, TestHost, poll, prerequisites

ROOT = Path(__file__).resolve().parent.parent
SECRET = "testtoken3f1a9c7eserver0d2b"  # a bare secret, as pulumi-random makes them


def spec(version: str) -> dict:
    return PoolSpec(cluster="t", pool="workers", role="worker", hardware="metal", system="x86_64-linux",
                    api_endpoint="https://127.0.0.31:6443", authorized_keys=[], labels={"version": version}).as_json()


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    missing = prerequisites() + machine_prerequisites()
    require(not missing, f"test machines need: {', '.join(missing)}")
    specs = {v: spec(v) for v in ("v1", "v2", "v3", "v4", "v5")}
    evaluated, _ = evaluate_systems(Path(STANDIN_FLAKE), specs, tmp_path_factory.mktemp("cache"))
    return evaluated


@pytest.fixture
def fleet(tmp_path, systems):
    """Four fresh hosts for each test: every test sets up the state it needs (any order, alone)."""
    with running_machines(tmp_path / "fleet", {f"h{i}": f"127.0.0.{31 + i}" for i in range(4)}) as (fleet, _):
        yield fleet


def plan_for(fleet: TestFleet, host: TestHost, system, **overrides) -> DeliveryPlan:
    files = (
        FileSpec("/etc/flakefleet/host.json", "0600", content=json.dumps({"name": host.name})),
        FileSpec(K3S_DROP_IN_PATH, "0600", content=json.dumps({"node-name": host.name, "node-ip": host.address})),
        FileSpec("/var/lib/flakefleet/secrets/k3s-agent-token", "0600", secret_env="FLAKEFLEET_SECRET_AGENT_TOKEN"),
    )
    fields = dict(host=host.name, address=host.address, port=host.port, user="root", host_key=host.host_key,
                  system=system.out, drv=system.drv, files=files, identity_file=str(fleet.client_key),
                  boot_timeout_s=60, health_timeout_s=60, deadman_margin_s=2, settle_s=1)
    fields.update(overrides)
    return DeliveryPlan(**fields)


def runner_env(fleet: TestFleet, plan: DeliveryPlan) -> dict[str, str]:
    return {**os.environ, PLAN_ENV: plan.to_json(), SIGNING_KEY_ENV: fleet.signing_secret,
            "FLAKEFLEET_SECRET_AGENT_TOKEN": SECRET, "PYTHONPATH": str(ROOT)}


def deliver(fleet: TestFleet, plan: DeliveryPlan) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flakefleet.delivery.runner"], env=runner_env(fleet, plan),
                          capture_output=True, text=True, timeout=120)


def report(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def deliver_all(fleet, hosts, system):
    with ThreadPoolExecutor(len(hosts)) as pool:
        return list(pool.map(lambda h: deliver(fleet, plan_for(fleet, h, system)), hosts))


def given_delivered(fleet, hosts, *systems_in_order):
    """Set up: each host switched to these systems in turn (one generation each)."""
    for system in systems_in_order:
        for proc in deliver_all(fleet, hosts, system):
            assert proc.returncode == 0, proc.stderr


def closure(path: str) -> list[str]:
    """Every store path `path` needs, on the deployer (nix-store -qR)."""
    return subprocess.run(["nix-store", "-qR", path], capture_output=True, text=True, check=True).stdout.split()


def test_deliver_to_four_hosts(fleet, systems):
    results = deliver_all(fleet, fleet.hosts, systems["v1"])
    for host, proc in zip(fleet.hosts, results):
        assert proc.returncode == 0, proc.stderr
        assert report(proc)["outcome"] == "activated"
        # The whole closure, each path once: the system, its kernel, packages, units and their parents.
        assert report(proc)["paths_copied"] == len(closure(systems["v1"].out))
        assert host.current_system() == systems["v1"].out
        assert Path(systems["v1"].out).name in host.store_paths()  # really crossed into the host's store
        assert host.generations() == ["system-1-link"]


def test_unchanged_redelivery_copies_nothing_and_does_not_activate(fleet, systems):
    given_delivered(fleet, fleet.hosts, systems["v1"])
    before = [h.generations() for h in fleet.hosts]
    for proc in deliver_all(fleet, fleet.hosts, systems["v1"]):
        assert proc.returncode == 0, proc.stderr
        assert report(proc)["outcome"] == "up to date" and report(proc)["paths_copied"] == 0
    assert [h.generations() for h in fleet.hosts] == before


def test_changed_system_activates_a_new_generation(fleet, systems):
    host = fleet.hosts[0]
    given_delivered(fleet, [host], systems["v1"])
    proc = deliver(fleet, plan_for(fleet, host, systems["v2"]))
    assert proc.returncode == 0, proc.stderr
    assert host.current_system() == systems["v2"].out
    assert host.generations() == ["system-1-link", "system-2-link"]
    assert os.readlink(host.path("/nix/var/nix/profiles/system")) == "system-2-link"


def test_failing_activation_rolls_back_and_exits_non_zero(fleet, systems):
    host = fleet.hosts[1]
    given_delivered(fleet, [host], systems["v1"], systems["v2"])
    host.set_fault("fail", systems["v3"].out)
    try:
        proc = deliver(fleet, plan_for(fleet, host, systems["v3"]))
    finally:
        host.clear_fault()
    assert proc.returncode == ROLLED_BACK
    assert f"host {host.name} rolled back to generation 2 ({systems['v2'].out})" in proc.stderr
    assert "activation of" in proc.stderr and "some units failed to start (exit 4)" in proc.stderr
    assert host.current_system() == systems["v2"].out
    assert os.readlink(host.path("/nix/var/nix/profiles/system")) == "system-2-link"


def test_unreachable_host_fails_after_bounded_retries_and_others_are_untouched(fleet, systems):
    down = TestHost("down", "127.0.0.39", 2222, fleet.root / "down", fleet.hosts[0].host_key)
    others = fleet.hosts[2:]
    given_delivered(fleet, others, systems["v1"])
    before = [(h.current_system(), h.generations()) for h in others]
    with ThreadPoolExecutor(3) as pool:
        dead = pool.submit(deliver, fleet, plan_for(fleet, down, systems["v2"], boot_timeout_s=3))
        fine = list(pool.map(lambda h: deliver(fleet, plan_for(fleet, h, systems["v1"])), others))
    proc = dead.result()
    assert proc.returncode == UNREACHABLE
    assert "host down (127.0.0.39:2222) unreachable after" in proc.stderr
    assert "nothing was changed on it" in proc.stderr
    assert all(p.returncode == 0 for p in fine)
    assert [(h.current_system(), h.generations()) for h in others] == before


def test_wrong_host_key_is_refused(fleet, systems):
    host = fleet.hosts[2]
    given_delivered(fleet, [host], systems["v1"])
    impostor_key = fleet.hosts[3].host_key
    proc = deliver(fleet, plan_for(fleet, host, systems["v2"], host_key=impostor_key, boot_timeout_s=2))
    assert proc.returncode == UNREACHABLE
    assert "SSH host key does not match the pinned key" in proc.stderr
    assert host.current_system() == systems["v1"].out


def test_dropped_connection_during_activation_is_confirmed_over_a_new_one(fleet, systems):
    host = fleet.hosts[2]
    host.set_fault("cut", systems["v4"].out)
    try:
        proc = deliver(fleet, plan_for(fleet, host, systems["v4"]))
    finally:
        host.clear_fault()
    assert proc.returncode == 0, proc.stderr
    assert "connection lost during activation" in proc.stderr
    assert host.current_system() == systems["v4"].out


def test_deployer_lost_after_activation_host_rolls_back_by_itself(fleet, systems):
    host = fleet.hosts[3]
    assert deliver(fleet, plan_for(fleet, host, systems["v1"])).returncode == 0  # a generation to go back to
    previous = host.current_system()
    previous_link = os.readlink(host.path("/nix/var/nix/profiles/system"))
    host.set_fault("hang", systems["v5"].out)
    plan = plan_for(fleet, host, systems["v5"], health_timeout_s=2, deadman_margin_s=1)
    runner = subprocess.Popen([sys.executable, "-m", "flakefleet.delivery.runner"], env=runner_env(fleet, plan),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        poll(lambda: host.current_system() == systems["v5"].out, 60, "activation of v5")
        runner.send_signal(signal.SIGKILL)  # the deployer vanishes: nobody will confirm
        runner.wait()
        log = host.path("/var/lib/flakefleet/deliveries.log")
        # The host records its decision after switching back: wait for the record, then look.
        poll(lambda: "the deployer did not confirm in time" in log.read_text(), 30, "the host's own rollback")
    finally:
        host.clear_fault()
        if runner.poll() is None:
            runner.kill()
    assert f"rolled back to generation {previous_link.split('-')[1]} ({previous})" in log.read_text()
    assert host.current_system() == previous
    assert os.readlink(host.path("/nix/var/nix/profiles/system")) == previous_link


def test_secret_files_are_private_and_never_stored_or_printed(fleet, systems):
    host = fleet.hosts[0]
    proc = deliver(fleet, plan_for(fleet, host, systems["v1"]))
    assert proc.returncode == 0, proc.stderr
    token = host.path("/var/lib/flakefleet/secrets/k3s-agent-token")
    assert token.read_text() == SECRET
    assert token.stat().st_mode & 0o777 == 0o600
    assert SECRET not in proc.stdout + proc.stderr
    for store in (host.root / "nix" / "store", Path(systems["v1"].out)):
        for path in store.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in plan_for(fleet, host, systems["v1"]).to_json()


def test_identity_can_come_from_the_deployers_environment(fleet, systems):
    host = fleet.hosts[1]
    plan = plan_for(fleet, host, systems["v2"], identity_file=None)
    env = {**runner_env(fleet, plan), "FLAKEFLEET_SSH_IDENTITY": str(fleet.client_key)}
    proc = subprocess.run([sys.executable, "-m", "flakefleet.delivery.runner"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert str(fleet.client_key) not in plan.to_json()


def test_changed_facts_are_applied_without_a_new_system(fleet, systems):
    host = fleet.hosts[0]
    given_delivered(fleet, [host], systems["v1"])
    plan = plan_for(fleet, host, systems["v1"])
    files = (FileSpec("/etc/flakefleet/host.json", "0600", content=json.dumps({"name": host.name, "v": 2})), *plan.files[1:])
    proc = deliver(fleet, DeliveryPlan(**{**plan.__dict__, "files": files}))
    assert proc.returncode == 0, proc.stderr
    assert report(proc)["paths_copied"] == 0 and report(proc)["outcome"] == "activated"
    assert json.loads(host.path("/etc/flakefleet/host.json").read_text())["v"] == 2


def test_k3s_starts_with_the_roles_flags_and_the_hosts_drop_in(fleet, systems):
    host = fleet.hosts[0]
    given_delivered(fleet, [host], systems["v1"])
    log = host.path("/var/lib/flakefleet/standin-k3s.log").read_text().splitlines()
    start = [line for line in log if " start " in line][-1]
    assert " start agent --server https://127.0.0.31:6443 --token-file /var/lib/flakefleet/secrets/k3s-agent-token" in start
    assert "--node-label=version=v1" in start and "--protect-kernel-defaults" in start
    assert f'"node-name": "{host.name}"' in start  # the drop-in k3s reads from config.yaml.d


def test_missing_token_fails_activation_like_the_k3s_unit_and_rolls_back(fleet, systems):
    host = fleet.hosts[3]
    given_delivered(fleet, [host], systems["v1"])
    plan = plan_for(fleet, host, systems["v3"])
    without_token = DeliveryPlan(**{**plan.__dict__, "files": plan.files[:2]})
    host.path("/var/lib/flakefleet/secrets/k3s-agent-token").unlink()
    before = host.current_system()
    proc = deliver(fleet, without_token)
    assert proc.returncode == ROLLED_BACK, proc.stderr
    assert "some units failed to start (exit 4)" in proc.stderr
    assert host.current_system() == before
