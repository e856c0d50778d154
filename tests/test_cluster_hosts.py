"""Tier 3: the local stack's real delivery plans, wave by wave, on test hosts with the stand-in k3s.

The plans are exactly what the Delivery component gives each Command (flakefleet.plan.rollout),
run in the order Pulumi's dependencies impose: the cluster-initializing control plane first,
then the worker batch, each host confirmed only when its batch's nodes are Ready.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace

import pytest

from flakefleet.cluster.kubectl import ready_nodes
from flakefleet.plan.contract import PLAN_ENV, ROLLED_BACK
from flakefleet.common.ssh import known_hosts_line, ssh_options
from flakefleet.plan.specs import AGENT_TOKEN, K3S_CAS, SERVER_TOKEN
from tests.local_fleet import TEST_CA_HASH, TEST_CAS, TOKENS, k3s_log, local_fleet, not_ready, run_waves, stack, waves_with_not_ready
from tests.machines.machine import add_machine
from tests.testhosts import poll, run_as_deployer

ADDRESSES = {"cp-0": "127.0.0.41", "worker-0": "127.0.0.42", "worker-1": "127.0.0.43"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with local_fleet(tmp_path_factory.mktemp("cluster"), ADDRESSES) as (fleet, hosts):
        yield fleet, hosts


@pytest.fixture
def formed(cluster):
    """The cluster formed on the stack's own system (a no-op when it already is): any test order."""
    fleet, hosts = cluster
    not_ready(fleet)
    cfg, inv, _, plans = stack(hosts, fleet)
    results = run_waves(fleet, cfg, inv, plans)
    assert all(r.returncode == 0 for r in results.values()), {n: r.stderr for n, r in results.items()}
    return fleet, hosts


def test_cluster_forms_in_order(cluster):
    fleet, hosts = cluster
    cfg, inv, systems, plans = stack(hosts, fleet)
    results = run_waves(fleet, cfg, inv, plans)
    assert {n: r.returncode for n, r in results.items()} == {"cp-0": 0, "worker-0": 0, "worker-1": 0}, \
        {n: r.stderr for n, r in results.items()}

    starts = {n: float(next(l for l in k3s_log(h) if " start " in l).split()[0]) for n, h in hosts.items()}
    assert starts["cp-0"] < starts["worker-0"] and starts["cp-0"] < starts["worker-1"]

    cp_start = next(l for l in k3s_log(hosts["cp-0"]) if " start " in l)
    assert " start server --token-file /var/lib/flakefleet/secrets/k3s-server-token" in cp_start
    assert '"cluster-init": true' in cp_start and '"node-name": "cp-0"' in cp_start
    assert f"--tls-san={ADDRESSES['cp-0']}" in cp_start
    for w in ("worker-0", "worker-1"):
        start = next(l for l in k3s_log(hosts[w]) if " start " in l)
        assert f" start agent --server https://{ADDRESSES['cp-0']}:6443 --token-file" in start
        assert f'"node-ip": "{ADDRESSES[w]}"' in start and "cluster-init" not in start


def test_facts_and_tokens_on_each_host(formed):
    fleet, hosts = formed
    for name, host in hosts.items():
        facts = json.loads(host.path("/etc/flakefleet/host.json").read_text())
        assert (facts["name"], facts["address"], facts["init"]) == (name, ADDRESSES[name], name == "cp-0")
        secrets = host.path("/var/lib/flakefleet/secrets")
        expected = {"k3s-agent-token"} | ({"k3s-server-token"} if name == "cp-0" else set())
        assert {p.name for p in secrets.iterdir()} == expected
        for p in secrets.iterdir():
            assert p.stat().st_mode & 0o777 == 0o600
        # Every join presents a secure token pinning the stack's server CA (docs.k3s.io/cli/token).
        agent = TOKENS[AGENT_TOKEN[1]]
        assert (secrets / "k3s-agent-token").read_text() == (agent if name == "cp-0" else f"K10{TEST_CA_HASH}::node:{agent}")
        if name == "cp-0":
            server = TOKENS[SERVER_TOKEN[1]]
            assert (secrets / "k3s-server-token").read_text() == f"K10{TEST_CA_HASH}::server:{server}"
    # The stack's CAs on the first server only, placed before k3s first started (it used them).
    tls = hosts["cp-0"].path("/var/lib/rancher/k3s/server/tls")
    assert (tls / "server-ca.crt").read_text() == TEST_CAS[K3S_CAS["server-ca"][0]]
    assert (tls / "etcd" / "peer-ca.key").stat().st_mode & 0o777 == 0o600
    assert hosts["cp-0"].path("/var/lib/rancher/k3s/server/token").read_text().startswith(f"K10{TEST_CA_HASH}::server:")
    assert not hosts["worker-0"].path("/var/lib/rancher/k3s/server/tls").exists()


def test_a_join_to_a_server_with_another_ca_is_refused_and_rolled_back(formed):
    """Something else answers at the API endpoint (its CA is not the cluster's): the worker's
    secure token pins the CA its delivery read on cp-0 over pinned SSH, so k3s refuses to send
    the secret, the worker is not healthy, and its delivery rolls back."""
    fleet, hosts = formed
    cacerts = fleet.apiserver / "cacerts"  # what the endpoint serves at /cacerts (tests/standin/k3s.py)
    genuine = cacerts.read_text()
    cfg, inv, systems, plans = stack(hosts, fleet, labels={"pin": "impostor"}, health_timeout_s=10)
    cacerts.write_text("-----BEGIN CERTIFICATE-----\nimpostor\n-----END CERTIFICATE-----\n")
    try:
        proc = run_as_deployer(fleet, ["flakefleet.delivery.runner"], {PLAN_ENV: plans["worker-0"].to_json(), **TOKENS},
                               timeout=300)
    finally:
        cacerts.write_text(genuine)
    assert proc.returncode == ROLLED_BACK, proc.stderr
    refused = [l for l in k3s_log(hosts["worker-0"]) if "refused: token CA hash does not match" in l]
    assert refused and refused[-1].split("refused: token CA hash does not match the Cluster CA certificate hash: ")[1] \
        .startswith(f"{TEST_CA_HASH} != ")


def test_worker_batch_readiness_was_asked_on_the_control_plane(formed):
    fleet, hosts = formed
    queries = [l for l in k3s_log(hosts["cp-0"]) if " kubectl get nodes " in l]
    assert any("get nodes worker-0 worker-1 --ignore-not-found -o json" in q for q in queries)
    assert any("get nodes cp-0 --ignore-not-found -o json" in q for q in queries)


def test_a_batch_that_is_not_ready_is_rolled_back_and_the_rollout_stops(formed):
    fleet, hosts = formed
    before = {n: h.current_system() for n, h in hosts.items()}
    cfg, inv, systems, plans = stack(hosts, fleet, labels={"rollout": "2"}, health_timeout_s=10)
    results = waves_with_not_ready(fleet, ("worker-1",), cfg, inv, plans)
    assert results["cp-0"].returncode == 0
    for w in ("worker-0", "worker-1"):  # the whole batch, the Ready worker too
        assert results[w].returncode == ROLLED_BACK, results[w].stderr
        assert "its batch was not Ready within 10s: not Ready: worker-1 (asked cp-0)" in results[w].stderr
        assert hosts[w].current_system() == before[w]


def test_kubeconfig_is_read_from_the_first_control_plane_and_pointed_at_the_api(formed, tmp_path):
    import yaml

    from flakefleet.plan.contract import KUBECONFIG_PLAN_ENV as KUBECONFIG_ENV
    from flakefleet.cluster.kubeconfig import ca_certificate

    fleet, hosts = formed
    cp = hosts["cp-0"]
    plan = {"cluster": "ff-local", "api_endpoint": f"https://{cp.address}:6443",
            "endpoint": {"host": "cp-0", "address": cp.address, "port": cp.port, "user": "root", "host_key": cp.host_key}}
    proc = run_as_deployer(fleet, ["flakefleet.cluster.kubeconfig"], {KUBECONFIG_ENV: json.dumps(plan)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(proc.stdout)
    assert doc["clusters"][0]["cluster"]["server"] == f"https://{cp.address}:6443"
    assert doc["current-context"] == "ff-local"
    assert ca_certificate(proc.stdout) == TEST_CAS[K3S_CAS["server-ca"][0]]  # the stack's server CA, served by the real API
    exported = tmp_path / "kubeconfig"
    exported.write_text(proc.stdout)
    nodes = fleet.kube.kubectl(exported, "get", "nodes", "-o", "json")  # as printed: `kubectl get nodes`
    assert nodes.returncode == 0, nodes.stderr
    assert set(ready_nodes(nodes.stdout)) >= {"cp-0", "worker-0", "worker-1"}
    assert cp.path("/etc/rancher/k3s/k3s.yaml").stat().st_mode & 0o777 == 0o600


def test_a_replaced_first_control_plane_joins_the_running_cluster(formed):
    from dataclasses import replace

    from flakefleet.plan.contract import Endpoint

    fleet, hosts = formed
    cfg, inv, systems, plans = stack(hosts, fleet)
    fresh = add_machine(fleet, "cp-0-new", "127.0.0.44")  # an empty machine taking cp-0's place
    running = hosts["cp-0"]
    plan = replace(
        plans["cp-0"], address=fresh.address, host_key=fresh.host_key, ready_via=(), batch=(),
        control_planes=(Endpoint("cp-0", fresh.address, fresh.port, "root", fresh.host_key),
                        Endpoint("cp-1", running.address, running.port, "root", running.host_key)),
    )
    try:
        proc = run_as_deployer(fleet, ["flakefleet.delivery.runner"], {PLAN_ENV: plan.to_json(), **TOKENS})
        assert proc.returncode == 0, proc.stderr
        assert "the cluster already runs on cp-1: joining it instead of initializing one" in proc.stderr
        start = next(l for l in k3s_log(fresh) if " start " in l)
        assert f'"server": "https://{ADDRESSES["cp-0"]}:6443"' in start and "cluster-init" not in start
    finally:
        fresh.stop()  # its kubelet would keep reporting the Node cp-0 beside the running cp-0's


def test_a_re_imaged_first_control_plane_that_reaches_no_peer_stops_instead_of_starting_a_second_cluster(formed):
    """The stack delivered cp-0 before (its Command's last report names a system); the machine now
    answering as cp-0 has no etcd data and cp-1 does not answer (here: a port nothing listens on,
    as a partition or a security group would leave it): the delivery fails with one clear line and
    k3s never starts with cluster-init."""
    from dataclasses import replace

    from flakefleet.plan.contract import PREVIOUS_STDOUT_ENV, Endpoint

    fleet, hosts = formed
    cfg, inv, systems, plans = stack(hosts, fleet)
    fresh = add_machine(fleet, "cp-0-reimaged", "127.0.0.45")
    running = hosts["cp-0"]  # named cp-1 below, at a port nothing listens on
    plan = replace(
        plans["cp-0"], address=fresh.address, host_key=fresh.host_key, ready_via=(), batch=(),
        control_planes=(Endpoint("cp-0", fresh.address, fresh.port, "root", fresh.host_key),
                        Endpoint("cp-1", running.address, 1, "root", running.host_key)),
    )
    previous = json.dumps({"system": plans["cp-0"].system, "outcome": "activated"})
    proc = run_as_deployer(fleet, ["flakefleet.delivery.runner"],
                           {PLAN_ENV: plan.to_json(), PREVIOUS_STDOUT_ENV: previous, **TOKENS})
    assert proc.returncode != 0
    assert "refusing to start a second, empty cluster" in proc.stderr, proc.stderr
    assert "asked: cp-1" in proc.stderr
    assert not any(" start " in line for line in k3s_log(fresh))
    fresh.stop()


def drift(fleet, outputs_file):
    return run_as_deployer(fleet, ["flakefleet", "drift", "--outputs", str(outputs_file), "--json"], {})


def test_drift_report_finds_a_host_switched_by_hand(cluster, tmp_path):
    fleet, hosts = cluster
    cfg, inv, systems, plans = stack(hosts, fleet)
    assert all(r.returncode == 0 for r in run_waves(fleet, cfg, inv, plans).values())  # delivered (or up to date)
    wanted = {n: p.system for n, p in plans.items()}
    nodes = {n: {"address": p.address, "ssh_port": p.port, "ssh_user": p.user, "host_key": p.host_key,
                 "pool": "cp" if n == "cp-0" else "workers", "wanted": p.system, "system": p.system}
             for n, p in plans.items() if n in ("cp-0", "worker-0")}
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"nodes": nodes}))
    first = drift(fleet, outputs)
    assert first.returncode == 0, first.stdout + first.stderr
    assert {r["host"]: r["status"] for r in json.loads(first.stdout)["hosts"]} == {"cp-0": "in sync", "worker-0": "in sync"}

    # By hand, outside flakefleet: switch worker-0 to another system and generation.
    w = hosts["worker-0"]
    _, _, _, other_plans = stack(hosts, fleet, labels={"by": "hand"})
    assert run_waves(fleet, cfg, inv, {**plans, "worker-0": other_plans["worker-0"]})["worker-0"].returncode == 0
    assert run_waves(fleet, cfg, inv, plans)["worker-0"].returncode == 0  # back to what the stack wants
    other = next(g for g in w.generations()
                 if os.readlink(w.path(f"/nix/var/nix/profiles/{g}")) == other_plans["worker-0"].system)
    hand = ("nix-env -p /nix/var/nix/profiles/system --switch-generation " + other.split("-")[1]
            + " && /nix/var/nix/profiles/system/bin/switch-to-configuration switch")
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line(w.address, w.port, w.host_key))
    subprocess.run(["ssh", *ssh_options(known, w.port, str(fleet.client_key)), f"root@{w.address}", "--", hand],
                   check=True, capture_output=True, timeout=60)

    second = drift(fleet, outputs)
    assert second.returncode == 2
    report = json.loads(second.stdout)
    rows = {r["host"]: r for r in report["hosts"]}
    assert report["pools"]["workers"]["off_wanted"] == {"worker-0": other_plans["worker-0"].system}
    assert rows["cp-0"]["status"] == "in sync"
    assert rows["worker-0"]["status"] == "drifted" and rows["worker-0"]["outside_flakefleet"] is True
    assert f"instead of {wanted['worker-0']}" in rows["worker-0"]["detail"]
    assert "changed outside flakefleet" in rows["worker-0"]["detail"]

    # The next delivery sets it right, and reports what it found (the stack's `drift` output).
    fixed = run_waves(fleet, cfg, inv, plans)["worker-0"]
    assert fixed.returncode == 0, fixed.stderr
    found = json.loads(fixed.stdout.strip().splitlines()[-1])["found"]
    assert found == {"running": other_plans["worker-0"].system, "outside_flakefleet": True}
    assert drift(fleet, outputs).returncode == 0


def test_a_control_plane_that_is_not_a_voting_etcd_member_is_not_confirmed(formed):
    """Ready is not etcd health: a server whose etcd member is still a learner (k3s' EtcdIsVoter
    condition False) fails the gate and rolls back, so the next control plane never starts."""
    fleet, hosts = formed

    def cp_label(raw):
        pools = json.loads(raw["flakefleet:pools"])
        for pool in pools:
            if pool["role"] == "control-plane":
                pool["labels"] = {"etcd": "learner-test"}
        raw["flakefleet:pools"] = json.dumps(pools)

    cfg, inv, systems, plans = stack(hosts, fleet, edit=cp_label, health_timeout_s=10)
    before = hosts["cp-0"].current_system()
    (fleet.apiserver / "learners").write_text("cp-0\n")
    try:
        proc = run_as_deployer(fleet, ["flakefleet.delivery.runner"], {PLAN_ENV: plans["cp-0"].to_json(), **TOKENS},
                               timeout=300)
    finally:
        (fleet.apiserver / "learners").unlink()
    assert proc.returncode == ROLLED_BACK, proc.stderr
    assert "not a voting etcd member: cp-0 (MemberIsLearner: Node has not been promoted" in proc.stderr
    assert hosts["cp-0"].current_system() == before


def test_status_shows_every_host_as_the_cluster_and_the_hosts_report_it(formed, tmp_path):
    fleet, hosts = formed
    cfg, inv, systems, plans = stack(hosts, fleet)
    nodes = {h.name: {"role": h.role, "pool": h.pool, "address": hosts[h.name].address, "ssh_port": hosts[h.name].port,
                      "ssh_user": "root", "host_key": hosts[h.name].host_key, "wanted": plans[h.name].system,
                      "system": plans[h.name].system, "reboot_pending": False, "last_outcome": "activated"}
             for h in inv.hosts}
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"nodes": nodes}))

    def status():
        proc = run_as_deployer(fleet, ["flakefleet", "status", "--outputs", str(outputs), "--json"], {}, timeout=120)
        return proc.returncode, {r["host"]: r for r in json.loads(proc.stdout)["hosts"]}

    # EtcdIsVoter back to True after an earlier test's learner (the stand-in: within a second).
    code, rows = poll(lambda: (answer := status())[0] == 0 and answer, 60, "every host in sync and voting")
    assert code == 0, rows
    version = "v" + next(iter(running_k3s(hosts["cp-0"])))
    assert {h: (r["ready"], r["k3s"], r["etcd"], r["system"]) for h, r in rows.items()} == {
        "cp-0": ("yes", version, "voter", "in sync"),
        "worker-0": ("yes", version, "-", "in sync"), "worker-1": ("yes", version, "-", "in sync")}
    (fleet.apiserver / "learners").write_text("cp-0\n")
    try:  # k3s' etcd controller sets the condition on its next pass (the stand-in: within a second)
        code, rows = poll(lambda: (answer := status())[0] == 2 and answer, 60, "cp-0 reported a learner")
    finally:
        (fleet.apiserver / "learners").unlink()
    assert code == 2 and rows["cp-0"]["etcd"].startswith("MemberIsLearner")


def running_k3s(host) -> list[str]:
    """The k3s version the host's running system carries (its store path's name)."""
    import re
    k3s = host.sh("readlink -f /run/current-system/sw/bin/k3s").stdout
    return re.findall(r"-k3s-(\d+\.\d+\.\d+\+k3s\d+)/", k3s)


def test_a_k3s_minor_upgrade_moves_the_servers_first_then_the_workers(formed):
    """The systems carry k3s 1.32 instead of 1.31 (the stand-in's package bumped): cp-0 runs the
    new k3s, Ready and a voting etcd member, before any worker's k3s is restarted."""
    fleet, hosts = formed
    cfg, inv, systems, plans = stack(hosts, fleet, spec_extra={"standin_packages": {"k3s": "1.32.4+k3s1"}})
    plans["cp-0"] = replace(plans["cp-0"], snapshot_before="flakefleet-pre-k3s-1-32")  # as the program plans it
    results = run_waves(fleet, cfg, inv, plans)
    assert all(r.returncode == 0 for r in results.values()), {n: r.stderr for n, r in results.items()}
    assert "etcd snapshot flakefleet-pre-k3s-1-32 taken before the k3s upgrade" in results["cp-0"].stderr
    assert json.loads(results["cp-0"].stdout.splitlines()[-1])["snapshot"] == "flakefleet-pre-k3s-1-32"
    log = k3s_log(hosts["cp-0"])
    saved = next(i for i, l in enumerate(log) if "etcd-snapshot save --name flakefleet-pre-k3s-1-32" in l)
    assert any(" start " in l for l in log[saved:])  # the snapshot came before the new k3s started
    starts = {}
    for name, host in hosts.items():
        starts[name] = float([l for l in k3s_log(host) if " start " in l][-1].split()[0])  # the upgrade's restart
        assert running_k3s(host) == ["1.32.4+k3s1"]
    assert starts["cp-0"] < min(starts["worker-0"], starts["worker-1"])
    nodes = json.loads(hosts["cp-0"].sh("/run/current-system/sw/bin/k3s kubectl get nodes -o json").stdout)["items"]
    assert {n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {
        "cp-0": "v1.32.4+k3s1", "worker-0": "v1.32.4+k3s1", "worker-1": "v1.32.4+k3s1"}
    # Back to the stack's own k3s for the other tests (a downgrade the program would refuse).
    cfg, inv, systems, plans = stack(hosts, fleet)
    assert all(r.returncode == 0 for r in run_waves(fleet, cfg, inv, plans).values())
