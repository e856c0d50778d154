"""Tier 4: what systemd makes real, on test machines that run it as NixOS does (tests/machines):
the manager's minimal PATH, NixOS' switch rules (tests/standin/nixos.py, from
switch-to-configuration-ng), k3s' unit with nixpkgs' settings (Restart=always, TimeoutStartSec=0),
and a stand-in API server whose Nodes stay Ready for the 40 s grace after their kubelet stops.

Each defect these hosts show is tested here: the health gate must see a k3s that restarts, hangs
or stops heart-beating after the switch; a file-only change must reach the units that read it;
the switch follows NixOS' rules for units that did not change.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from flakefleet.cluster.kubectl import node_items
from flakefleet.nixos.evaluate import evaluate_systems
from flakefleet.plan.contract import K3S_DROP_IN_PATH, ROLLED_BACK, DeliveryPlan, Endpoint, FileSpec, PoolSpec
from tests.conftest import STANDIN_FLAKE
from tests.local_fleet import require_machines
from tests.machines.machine import running_machines
from tests.test_delivery_hosts import deliver, report
from tests.testhosts import poll

SERVER_TOKEN = "servertokenforthehealthtests"  # a bare secret, as pulumi-random makes them
CP, WORKER = "127.0.0.121", "127.0.0.122"


def spec(version: str, role: str = "worker", **extra) -> dict:
    return {**PoolSpec(cluster="t", pool="workers", role=role, hardware="metal", system="x86_64-linux",
                       api_endpoint=f"https://{CP}:6443", authorized_keys=[], labels={"version": version}).as_json(),
            **extra}


SPECS = {
    "w1": spec("w1"), "w2": spec("w2"), "w3": spec("w3"),
    # w1 with other versions of the packages of two units, k3s' unchanged
    "w1-ssh-nix": spec("w1", standin_packages={"openssh": "9.9p2", "nix": "2.24.11"}),
    "cp1": spec("cp1", role="control-plane"), "cp2": spec("cp2", role="control-plane"),
}  # fmt: skip


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    require_machines()
    evaluated, _ = evaluate_systems(Path(STANDIN_FLAKE), SPECS, tmp_path_factory.mktemp("cache"))
    return evaluated


@pytest.fixture
def pair(tmp_path, systems):
    """A control plane and a worker, fresh for each test."""
    with running_machines(tmp_path / "fleet", {"cp": CP, "worker": WORKER}) as (fleet, machines):
        yield fleet, machines


def files(name: str, address: str, role: str, label: str = "a") -> tuple[FileSpec, ...]:
    server = role == "control-plane"
    return (
        FileSpec("/etc/flakefleet/host.json", "0644", content=json.dumps({"name": name}), restart=("flakefleet-hostname.service",)),
        FileSpec(K3S_DROP_IN_PATH, "0600", content=json.dumps({"node-name": name, "node-ip": address, "node-label": [label]}),
                 restart=("k3s.service",)),
        FileSpec("/var/lib/flakefleet/secrets/k3s-agent-token", "0600", secret_env="FLAKEFLEET_SECRET_AGENT_TOKEN",
                 restart=("k3s.service",)),
        *((FileSpec("/var/lib/flakefleet/secrets/k3s-server-token", "0600", content=SERVER_TOKEN, restart=("k3s.service",)),)
          if server else ()),
    )  # fmt: skip


def plan(fleet, machine, system, role="worker", label="a", cluster=None, **overrides) -> DeliveryPlan:
    """A plan for one machine; `cluster` (the control plane machine) adds the Kubernetes gate."""
    gate = {}
    if cluster is not None:
        cp = Endpoint("cp", cluster.address, cluster.port, "root", cluster.host_key)
        gate = {"batch": (machine.name,), "ready_via": (cp,), "control_planes": (cp,)}
    fields = dict(host=machine.name, address=machine.address, port=machine.port, user="root",
                  host_key=machine.host_key, system=system.out, drv=system.drv,
                  files=files(machine.name, machine.address, role, label), identity_file=str(fleet.client_key),
                  boot_timeout_s=120, health_timeout_s=120, deadman_margin_s=30, settle_s=2, **gate)
    fields.update(overrides)
    return DeliveryPlan(**fields)


def k3s(machine) -> dict[str, str]:
    return machine.show("k3s.service", "ActiveState", "SubState", "NRestarts", "InvocationID", "ExecStart")


def starts(machine) -> list[str]:
    log = machine.path("/var/lib/flakefleet/standin-k3s.log")
    return [l for l in log.read_text().splitlines() if " start " in l] if log.exists() else []


def test_the_manager_runs_transient_units_with_systemds_own_path_only(pair):
    """The likeness the dead-man switch depends on: as on NixOS, a `systemd-run` unit finds
    systemd's programs and nothing else."""
    _, machines = pair
    machine = machines["worker"]
    assert machine.sh("systemctl show-environment").stdout.strip().splitlines() == [
        "LANG=C.UTF-8", "PATH=/usr/lib/flakefleet-standin/systemd/bin"]
    found = machine.sh("systemd-run --wait --pipe --quiet /bin/sh -c 'command -v systemctl; command -v mkdir'",
                       check=False)
    assert found.returncode != 0 and found.stdout.strip().endswith("/systemctl")


def test_a_crash_looping_k3s_is_rolled_back(pair, systems):
    """k3s with Restart=always never becomes `failed`, and systemd is `running` between its
    crashes: the gate sees it restart after the switch."""
    fleet, machines = pair
    worker = machines["worker"]
    assert deliver(fleet, plan(fleet, worker, systems["w1"])).returncode == 0
    worker.set_fault("crashloop", systems["w2"].out)
    proc = deliver(fleet, plan(fleet, worker, systems["w2"]))
    assert proc.returncode == ROLLED_BACK, proc.stderr
    assert "not healthy: k3s.service restarted since the activation (NRestarts 0 -> 1" in proc.stderr
    assert f"rolled back to generation 1 ({systems['w1'].out})" in proc.stderr
    assert worker.current_system() == systems["w1"].out
    poll(lambda: k3s(worker)["SubState"] == "running", 60, "k3s of w1 running again")
    assert "--node-label=version=w1" in k3s(worker)["ExecStart"]  # its unit is w1's again


def test_a_k3s_that_stops_heart_beating_is_rolled_back_while_its_node_is_still_ready(pair, systems):
    """The Node stays Ready for the 40 s grace period after its kubelet stops; the gate asks for a
    Lease renewed after the activation began."""
    fleet, machines = pair
    cp, worker = machines["cp"], machines["worker"]
    assert deliver(fleet, plan(fleet, cp, systems["cp1"], role="control-plane")).returncode == 0
    assert deliver(fleet, plan(fleet, worker, systems["w1"], cluster=cp)).returncode == 0
    worker.set_fault("no-heartbeat", systems["w2"].out)
    proc = deliver(fleet, plan(fleet, worker, systems["w2"], cluster=cp, health_timeout_s=15))
    assert proc.returncode == ROLLED_BACK, proc.stderr
    assert "worker's kubelet has not renewed its Lease since the switch" in proc.stderr
    node = node_items(cp.sh(f"{systems['cp1'].out}/sw/bin/k3s kubectl get nodes worker -o json").stdout)[0]  # the Node itself
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"  # Ready alone would have confirmed it
    assert worker.current_system() == systems["w1"].out


def test_a_switch_whose_k3s_never_becomes_ready_is_bounded_and_rolled_back(pair, systems):
    """A server k3s is Type=notify with TimeoutStartSec=0: a start that never reports ready holds
    switch-to-configuration forever; the host bounds it by the health timeout."""
    fleet, machines = pair
    cp = machines["cp"]
    assert deliver(fleet, plan(fleet, cp, systems["cp1"], role="control-plane")).returncode == 0
    cp.set_fault("hang", systems["cp2"].out)
    proc = deliver(fleet, plan(fleet, cp, systems["cp2"], role="control-plane", health_timeout_s=10))
    assert proc.returncode == ROLLED_BACK, proc.stderr
    assert f"the activation of {systems['cp2'].out} did not finish within 10s" in proc.stderr
    assert "connection lost" not in proc.stderr
    assert f"rolled back to generation 1 ({systems['cp1'].out})" in proc.stderr
    assert cp.current_system() == systems["cp1"].out
    poll(lambda: k3s(cp)["SubState"] == "running", 60, "the control plane's k3s running again")
    assert "--node-label=version=cp1" in k3s(cp)["ExecStart"]


def test_a_file_only_change_restarts_the_units_that_read_it(pair, systems):
    """The same system with a new k3s drop-in: NixOS' switch restarts nothing (no unit file
    changed); delivery restarts k3s, which starts with the new drop-in."""
    fleet, machines = pair
    worker = machines["worker"]
    assert deliver(fleet, plan(fleet, worker, systems["w1"], label="a")).returncode == 0
    before, started = k3s(worker)["InvocationID"], len(starts(worker))
    proc = deliver(fleet, plan(fleet, worker, systems["w1"], label="b"))
    assert proc.returncode == 0, proc.stderr
    assert report(proc)["paths_copied"] == 0
    assert k3s(worker)["InvocationID"] != before
    assert len(starts(worker)) == started + 1 and '"node-label": ["b"]' in starts(worker)[-1]
    log = worker.path("/var/lib/flakefleet/deliveries.log").read_text()
    assert "restarted k3s.service: files it reads changed (/etc/rancher/k3s/config.yaml.d/50-flakefleet-host.yaml )" in log


def test_a_unit_the_switch_restarted_is_not_restarted_again(pair, systems):
    fleet, machines = pair
    worker = machines["worker"]
    assert deliver(fleet, plan(fleet, worker, systems["w1"], label="a")).returncode == 0
    started = len(starts(worker))
    assert deliver(fleet, plan(fleet, worker, systems["w2"], label="b")).returncode == 0  # new unit and new drop-in
    assert len(starts(worker)) == started + 1  # once, by the switch
    assert '"node-label": ["b"]' in starts(worker)[-1] and "--node-label=version=w2" in starts(worker)[-1]


def test_a_rolled_back_file_change_restarts_k3s_with_the_old_files(pair, systems):
    fleet, machines = pair
    worker = machines["worker"]
    assert deliver(fleet, plan(fleet, worker, systems["w1"], label="a")).returncode == 0
    worker.set_fault("fail", systems["w1"].out)  # the switch reports failed units: roll back
    proc = deliver(fleet, plan(fleet, worker, systems["w1"], label="b"))
    worker.clear_fault()
    assert proc.returncode == ROLLED_BACK, proc.stderr
    assert '"node-label": ["a"]' in worker.path(K3S_DROP_IN_PATH).read_text()
    # k3s runs with the restored drop-in: the rollback restarted it (systemctl returns once the
    # agent is exec'd, Type=exec; the stand-in logs its start a moment later: wait for it).
    poll(lambda: '"node-label": ["a"]' in starts(worker)[-1], 60, "k3s started again with the restored drop-in")
    assert '"node-label": ["b"]' in starts(worker)[-2]


def copy_to(machine, system) -> None:
    """A system into the machine's store without activating it (test set-up: import, unsigned)."""
    subprocess.run(["nix-store", "--realise", system.drv], check=True, capture_output=True)
    paths = subprocess.run(["nix-store", "-qR", system.out], check=True, capture_output=True, text=True).stdout.split()
    with open(machine.path("/root/closure.nar"), "wb") as nar:
        subprocess.run(["nix-store", "--export", *paths], check=True, stdout=nar)
    machine.sh("nix-store --import --option require-sigs false < /root/closure.nar >/dev/null && rm /root/closure.nar")


def test_the_switch_reloads_or_leaves_units_by_nixos_rules(pair, systems):
    """From one system to one where only the packages of sshd.service (X-ReloadIfChanged) and
    nix-daemon.service (X-RestartIfChanged=false) changed: sshd is reloaded, nix-daemon left
    running, k3s (its unit unchanged) left running; dry-activate says so first."""
    fleet, machines = pair
    worker = machines["worker"]
    assert deliver(fleet, plan(fleet, worker, systems["w1"])).returncode == 0
    units = ("k3s.service", "nix-daemon.service", "sshd.service")
    before = {u: worker.show(u, "InvocationID")["InvocationID"] for u in units}
    copy_to(worker, systems["w1-ssh-nix"])
    dry = worker.sh(f"{systems['w1-ssh-nix'].out}/bin/switch-to-configuration dry-activate", check=False).stderr
    assert "would NOT stop the following changed units: nix-daemon.service" in dry
    assert "would reload the following units: sshd.service" in dry
    assert "would stop the following units" not in dry and "k3s.service" not in dry
    proc = deliver(fleet, plan(fleet, worker, systems["w1-ssh-nix"]))
    assert proc.returncode == 0, proc.stderr
    assert {u: worker.show(u, "InvocationID")["InvocationID"] for u in units} == before  # nothing restarted
    assert "reloaded" in worker.path("/var/lib/flakefleet/standin-openssh.log").read_text()
    assert "restarted k3s.service" not in worker.path("/var/lib/flakefleet/deliveries.log").read_text()


def test_a_changed_k3s_unit_is_stopped_and_started_again(pair, systems):
    fleet, machines = pair
    worker = machines["worker"]
    assert deliver(fleet, plan(fleet, worker, systems["w1"])).returncode == 0
    copy_to(worker, systems["w3"])
    dry = worker.sh(f"{systems['w3'].out}/bin/switch-to-configuration dry-activate", check=False).stderr
    assert "would stop the following units: k3s.service" in dry
    assert "would start the following units: k3s.service" in dry
