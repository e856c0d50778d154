"""Tier 1: the delivery runner's command construction, without any host."""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flakefleet.plan.contract import DeliveryPlan, FileSpec
from flakefleet.common.retry import backoff_delays
from flakefleet.host.files import files_digest, staging_script
from flakefleet.common.ssh import PinnedSSH, known_hosts_line, ssh_options
from flakefleet.delivery.transfer import nix_copy_argv

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDGlv9IUYqOMO0XDWoRC/ARLiSapuRe4Nvcrzcfdynnh"
PLAN = DeliveryPlan(host="cp-0", address="10.0.2.0", port=22, user="root", host_key=KEY + " cp-0",
                    system="/nix/store/abc-nixos-system-cp", drv="/nix/store/abc-nixos-system-cp.drv",
                    files=(FileSpec("/var/lib/flakefleet/secrets/k3s-server-token", secret_env="FLAKEFLEET_SECRET_SERVER"),))


def ssh_argv(plan: DeliveryPlan, remote: list[str]) -> list[str]:
    """The ssh command line a delivery runs `remote` on its host with."""
    ssh = PinnedSSH([plan], None)
    try:
        return ssh.argv(plan, remote)
    finally:
        ssh.close()


@pytest.mark.parametrize(("port", "expected"), [(22, "10.0.2.0 ssh-ed25519"), (2222, "[10.0.2.0]:2222 ssh-ed25519")])
def test_known_hosts_line(port, expected):
    line = known_hosts_line("10.0.2.0", port, KEY + " comment")
    assert line.startswith(expected) and line.endswith("crzcfdynnh\n") and "comment" not in line


def test_ssh_always_checks_the_pinned_key():
    opts = ssh_options(Path("/tmp/kh"), 22, None)
    settings = dict(opts[i + 1].split("=", 1) for i, o in enumerate(opts) if o == "-o")
    # Exactly these values: strict checking against the stack's keys only, never prompting.
    assert settings["StrictHostKeyChecking"] == "yes"
    assert settings["UserKnownHostsFile"] == "/tmp/kh" and settings["GlobalKnownHostsFile"] == "/dev/null"
    assert settings["BatchMode"] == "yes"


def test_identity_is_exclusive_when_given():
    opts = ssh_options(Path("/tmp/kh"), 22, "/keys/deploy")
    assert opts[-4:] == ["-i", "/keys/deploy", "-o", "IdentitiesOnly=yes"]


def test_remote_words_are_quoted():
    argv = ssh_argv(PLAN, ["/run/flakefleet/hostctl.sh", "rollback", "tok", "it's broken; rm -rf /"])
    assert argv[-2] == "--"
    assert shlex.split(argv[-1]) == ["/run/flakefleet/hostctl.sh", "rollback", "tok", "it's broken; rm -rf /"]


def test_nix_copy_targets_ssh_ng_and_can_substitute_on_destination():
    assert nix_copy_argv(PLAN)[-3:] == ["--to", "ssh-ng://root@10.0.2.0", PLAN.system]
    plan = DeliveryPlan(**{**PLAN.__dict__, "substitute_on_destination": True})
    assert "--substitute-on-destination" in nix_copy_argv(plan)


def test_secrets_travel_in_the_script_body_only():
    secret = b"K10-super-secret::server:abc"
    script = staging_script("tok", "#!/bin/sh\n", [("/var/lib/flakefleet/secrets/t", "0600", secret)])
    assert secret.decode() not in script  # base64 inside a here-document, sent on stdin
    assert "chmod 0600 /run/flakefleet/tok/files/var/lib/flakefleet/secrets/t" in script
    argv = ssh_argv(PLAN, ["sh", "-s"])
    assert all(secret.decode() not in word for word in argv)


@pytest.mark.parametrize("path", ["relative/path", "/etc/../root/.ssh/x", "/etc/x; rm -rf /", "/etc/$(id)", "/a/.."])
def test_unsafe_paths_are_refused(path):
    with pytest.raises(ValueError):
        staging_script("tok", "", [(path, "0600", b"x")])


def test_plan_round_trips_through_json():
    assert DeliveryPlan.from_json(PLAN.to_json()) == PLAN
    assert "FLAKEFLEET_SECRET_SERVER" in PLAN.to_json()  # the name of the secret, not its value


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_digest_changes_with_any_file_content(a, b):
    files = lambda content: [("/etc/flakefleet/host.json", "0600", content)]  # noqa: E731
    assert (files_digest("/nix/store/x", files(a)) == files_digest("/nix/store/x", files(b))) == (a == b)


def test_digest_changes_with_the_system():
    assert files_digest("/nix/store/a", []) != files_digest("/nix/store/b", [])


def test_backoff_grows_and_is_capped():
    delays = list(itertools.islice(backoff_delays(1, 2, 30), 8))
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_first_boot_user_data_trusts_the_fleet_and_holds_no_key_of_the_host():
    from flakefleet.plan.firstboot import first_boot_user_data

    data = first_boot_user_data(["ssh-ed25519 AAAA deploy"], "fleet-1:pub=")
    assert data.startswith("#!/bin/sh\n")  # amazon-init executes scripts that start with #!
    assert "ssh-ed25519 AAAA deploy" in data
    assert "extra-trusted-public-keys = fleet-1:pub=" in data
    assert "ssh_host" not in data and "PRIVATE" not in data  # the host makes its own key
    assert "systemctl restart nix-daemon.service" in data


def test_signing_public_key_matches_nix():
    import subprocess

    from flakefleet.config import StackConfig
    from tests.conftest import require_tool

    require_tool("nix")
    feature = ["--extra-experimental-features", "nix-command"]
    secret = subprocess.run(["nix", *feature, "key", "generate-secret", "--key-name", "t-1"], capture_output=True,
                            text=True, check=True).stdout.strip()
    public = subprocess.run(["nix", *feature, "key", "convert-secret-to-public"], input=secret, capture_output=True,
                            text=True, check=True).stdout.strip()
    cfg = StackConfig.model_construct(signing_key=secret)
    assert cfg.signing_public_key == public
    assert secret not in repr(StackConfig.model_construct(signing_key=secret, cluster=None, pools=[]))


def test_kubeconfig_server_rewritten_and_ca_extracted():
    from flakefleet.cluster.kubeconfig import ca_certificate, rewrite_server

    original = (
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0EtUEVN\n"
        "    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n"
        "    user: default\n  name: default\ncurrent-context: default\nkind: Config\n"
    )
    import yaml

    doc = yaml.safe_load(rewrite_server(original, "https://10.20.0.4:6443", "ff-staging"))
    assert doc["clusters"][0]["cluster"]["server"] == "https://10.20.0.4:6443"
    assert doc["current-context"] == "ff-staging" and doc["contexts"][0]["context"]["cluster"] == "ff-staging"
    assert ca_certificate(original) == "CA-PEM"


def test_a_replaced_first_control_plane_joins_instead_of_initializing():
    import json as _json

    from flakefleet.plan.contract import FACTS_PATH, K3S_DROP_IN_PATH
    from flakefleet.cluster.membership import join_instead_of_init

    facts = {"name": "cp-0", "address": "10.0.2.0", "role": "control-plane", "init": True, "server": None,
             "api_endpoint": "https://10.0.0.4:6443"}
    contents = [
        (FACTS_PATH, "0644", _json.dumps(facts).encode()),
        (K3S_DROP_IN_PATH, "0600", _json.dumps({"node-name": "cp-0", "node-ip": "10.0.2.0", "cluster-init": True}).encode()),
        ("/var/lib/flakefleet/secrets/k3s-server-token", "0600", b"secret"),
    ]
    joined = {p: (m, d) for p, m, d in join_instead_of_init(contents)}
    assert _json.loads(joined[K3S_DROP_IN_PATH][1]) == {"node-name": "cp-0", "node-ip": "10.0.2.0",
                                                         "server": "https://10.0.0.4:6443"}
    assert _json.loads(joined[FACTS_PATH][1])["init"] is False
    assert joined["/var/lib/flakefleet/secrets/k3s-server-token"] == ("0600", b"secret")
    joiner = [(p, m, d.replace(b'"cluster-init": true', b'"server": "x"')) for p, m, d in contents]
    assert join_instead_of_init(joiner) is None


@pytest.mark.parametrize(
    ("state", "status", "outside", "detail"),
    [
        ({"current": "/nix/store/a", "profile": "system-2-link", "applied_profile": "system-2-link"}, "in sync", False, ""),
        ({"current": "/nix/store/b", "profile": "system-2-link", "applied_profile": "system-2-link"}, "drifted", False,
         "runs /nix/store/b instead of /nix/store/a"),
        ({"current": "/nix/store/a", "profile": "system-3-link", "applied_profile": "system-2-link"}, "drifted", True,
         "system profile is system-3-link but flakefleet left system-2-link: changed outside flakefleet"),
        ({"current": "", "profile": "", "applied_profile": ""}, "drifted", False,
         "runs nothing instead of /nix/store/a; flakefleet has not confirmed a delivery on it"),
    ],
    ids=["in-sync", "other-system", "outside-switch", "never-delivered"],
)
def test_drift_classification(state, status, outside, detail):
    from flakefleet.host.protocol import HostState
    from flakefleet.ops.drift import classify

    row = classify("h", "/nix/store/a", HostState(**state))
    assert (row.status, row.outside_flakefleet, row.detail) == (status, outside, detail)


def test_only_a_connection_that_never_opened_is_tried_again():
    """After a boot, sshd may still be restarting: a refused connection never ran the step, so it
    is asked again; a connection lost mid-command may have run it, so it is not."""
    from subprocess import CompletedProcess
    from types import SimpleNamespace

    from flakefleet.delivery.reboot import over_ssh

    refused = CompletedProcess([], 255, "", "ssh: connect to host 127.0.0.83 port 2222: Connection refused\n")
    dropped = CompletedProcess([], 255, "", "Connection to 127.0.0.83 closed by remote host.\n")
    done = CompletedProcess([], 0, "ok", "")
    said: list[str] = []
    d = SimpleNamespace(plan=SimpleNamespace(host="worker-1"), say=said.append)
    for answers, expected, calls in [([refused, refused, done], done, 3), ([dropped, done], dropped, 1),
                                     ([refused] * 5, refused, 5), ([done], done, 1)]:
        asked = iter(answers)
        seen = []
        result = over_ssh(d, lambda: seen.append(1) or next(asked), attempts=5, delays=itertools.repeat(0))
        assert result is expected and len(seen) == calls
    assert said and "Connection refused" in said[0]


def test_the_units_that_read_each_file_are_staged_with_it():
    script = staging_script("tok", "", [("/etc/a", "0600", b"x"), ("/etc/b", "0600", b"y")],
                            {"/etc/a": ("k3s.service",), "/etc/b": ()})
    # /etc/b has no reader: nothing to restart, no line
    assert "cat > /run/flakefleet/tok/restarts <<'FLAKEFLEET_EOF'\n/etc/a k3s.service\nFLAKEFLEET_EOF" in script


@pytest.mark.parametrize("unit", ["k3s.service; reboot", "$(id).service", "k3s", "../x.service"])
def test_unsafe_unit_names_are_refused(unit):
    with pytest.raises(ValueError):
        staging_script("tok", "", [("/etc/a", "0600", b"x")], {"/etc/a": (unit,)})


def test_every_file_a_host_gets_names_the_units_that_read_it():
    from flakefleet.config import parse_stack_config
    from flakefleet.config.stackfile import read_stack_file
    from flakefleet.plan.contract import K3S_DROP_IN_PATH
    from flakefleet.plan.inventory import plan_inventory
    from flakefleet.plan.specs import CACHE_CONF_PATH, FACTS_PATH, SNAPSHOTS_DROP_IN, host_files

    raw = read_stack_file("local")
    cfg = parse_stack_config(raw, raw.get("aws:region"))
    inv = plan_inventory(cfg)
    cp = next(h for h in inv.hosts if h.role == "control-plane")
    readers = {f.path: f.restart for f in host_files(cfg, inv, cp, "bucket", "s3://cache")}
    assert readers[FACTS_PATH] == ("flakefleet-hostname.service",)
    assert readers[K3S_DROP_IN_PATH] == readers[SNAPSHOTS_DROP_IN] == ("k3s.service",)
    assert readers[CACHE_CONF_PATH] == ("nix-daemon.service",)
    assert all(units == ("k3s.service",) for path, units in readers.items() if "/secrets/" in path)
    assert readers["/etc/flakefleet/peers.json"] == ("firewall.service",)  # the local stack: metal


def test_every_metal_host_is_told_where_the_fleet_s_nodes_live_by_role():
    """The peers file nixos/common/firewall.nix admits to etcd, the kubelet and the overlay on
    bring-your-own metal: by role, the networks every node of the stack lives in (EC2 pools' address
    blocks, a metal pool's own address when it names no networks), the same on every metal host,
    at the path the Nix side reads; EC2 hosts have security groups instead and no file (so
    scaling an EC2 pool touches no EC2 host)."""
    from ipaddress import ip_address, ip_network

    from flakefleet.config import parse_stack_config
    from flakefleet.config.stackfile import read_stack_file
    from flakefleet.plan.contract import PEERS_PATH
    from flakefleet.plan.inventory import plan_inventory
    from flakefleet.plan.specs import host_files
    from tests.test_nixos import nix_eval
    import json as _json

    raw = read_stack_file("prod")
    cfg = parse_stack_config(raw, raw.get("aws:region"))
    inv = plan_inventory(cfg)
    assert all(PEERS_PATH not in {f.path for f in host_files(cfg, inv, h)} for h in inv.hosts)  # EC2: groups
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN30/nfDsSmW47nLWwLC8oqUHyjih9e4Wn9nniwWLhmM"
    pools = _json.loads(raw["flakefleet:pools"])
    raw["flakefleet:pools"] = _json.dumps(pools + [{"name": "byo", "role": "worker", "provider": "metal", "hosts": [
        {"name": "byo-0", "address": "192.168.7.10", "ssh_host_key": key}]}])
    cfg = parse_stack_config(raw, raw.get("aws:region"))
    inv = plan_inventory(cfg)
    metal = [h for h in inv.hosts if h.provider == "metal"]
    assert metal
    contents = {next(f.content for f in host_files(cfg, inv, h) if f.path == PEERS_PATH) for h in metal}
    assert len(contents) == 1
    peers = _json.loads(contents.pop())
    assert set(peers) == {"control-plane", "worker"}
    for role, hosts in (("control-plane", inv.control_planes), ("worker", inv.workers)):
        nets = [ip_network(n) for n in peers[role]]
        assert all(any(h.address in net for net in nets) for h in hosts), role
    assert "192.168.7.10/32" in peers["worker"]  # no networks named: its own address, exactly
    assert not any(ip_address("192.168.7.10") in ip_network(n) for n in peers["control-plane"])
    # EC2 control planes: their pool's blocks in each zone (prod: one /24 block per zone), not the VPC
    assert all(ip_network(n).prefixlen > cfg.network.vpc_cidr.prefixlen for n in peers["control-plane"])
    assert nix_eval("(import ./nixos/lib).paths.peers") == PEERS_PATH


@pytest.mark.parametrize("text,expected", [
    ('{"spec": {"renewTime": "2026-12-01T22:44:41.597736Z"}}', 1796165081.597736),
    ('{"spec": {"renewTime": "2026-12-01T22:44:41Z"}}', 1796165081.0),
    ('{"spec": {}}', None), ("", None), ("not json", None), ('{"spec": {"renewTime": 5}}', None),
])
def test_a_leases_renew_time_is_read_as_kubectl_prints_it(text, expected):
    from flakefleet.cluster.kubectl import lease_renewed

    assert lease_renewed(text) == expected


def test_the_lease_query_asks_the_node_lease_namespace():
    from flakefleet.cluster.kubectl import lease_query

    assert lease_query("w-1")[2:] == ["get", "lease", "w-1", "-n", "kube-node-lease", "--ignore-not-found", "-o", "json"]


@pytest.mark.parametrize("mode,running,needs", [
    ("always", "/nix/store/old", ["reboot: always"]),  # a new system: reboot
    ("always", PLAN.system, []),  # the same system, new files: no reboot
])
def test_reboot_always_means_a_new_system(mode, running, needs):
    from dataclasses import replace

    from flakefleet.delivery.reboot import reasons

    class Session:
        plan = replace(PLAN, reboot=mode)

    assert reasons(Session(), running) == needs


def test_a_timeout_is_not_a_lost_connection():
    from flakefleet.common.ssh import TIMED_OUT

    remote = PinnedSSH([PLAN], None)
    try:
        res = remote.run(PLAN, ["true"], timeout=0.001)  # nothing answers in a millisecond
    finally:
        remote.close()
    assert res.returncode == TIMED_OUT == 124 and "no answer within" in res.stderr
