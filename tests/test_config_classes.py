"""Tier 1: the classes of bad input people write while editing stack files, each fixed at its root
(issue 12): a broken file, a bad field that used to hide the rest of its pool, well-formed but
impossible values, SSH keys, kubelet labels, and near-miss namespaces. Every case: one line per
problem naming its key path (or file, line and column), all at once, only real problems."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from typing import Any

import pytest

from flakefleet.config import ConfigError, kubelet_may_set, parse_stack_config, ssh_key_problem
from flakefleet.config.stackfile import parse_stack_yaml
from tests.test_config import DEPLOY, KEY, KEY2, base

REGION = "eu-west-1"


def metal_stack(*hosts: dict, cp_hosts: list[dict] | None = None) -> dict[str, Any]:
    """A bring-your-own stack with one control plane and the given worker hosts, no AWS."""
    cp = cp_hosts or [{"name": "cp-0", "address": "192.168.50.1", "ssh_host_key": KEY}]
    return {
        "cluster": {"name": "t"},
        "storage": {"enabled": False},
        "delivery": {"authorized_keys": [DEPLOY]},
        "pools": [
            {"name": "cp", "role": "control-plane", "provider": "metal", "hosts": cp},
            {"name": "workers", "role": "worker", "provider": "metal", "hosts": list(hosts)},
        ],
    }


def host(name: str, address: str, key: str = KEY2, **extra) -> dict:
    return {"name": name, "address": address, "ssh_host_key": key, **extra}


def found(cfg: dict[str, Any], region: str | None = None, raw_extra: dict | None = None) -> list[str]:
    raw = {f"flakefleet:{k}": json.dumps(v) for k, v in cfg.items()}
    raw.update(raw_extra or {})
    try:
        parse_stack_config(raw, region)
    except ConfigError as err:
        return err.problems
    return []


# ----------------------------------------------------------------------------- 1. the file itself

FILES = [
    ("tab", "config:\n\tflakefleet:cluster: {name: x}\n",
     ["stacks/Pulumi.x.yaml:2:1: a tab character; YAML indents with spaces only"]),
    ("unclosed-bracket", "config:\n  flakefleet:pools: [\n    {name: a}\n",
     ["stacks/Pulumi.x.yaml:2:21: this '[' is never closed"]),
    ("unquoted-cron", "config:\n  flakefleet:dr:\n    snapshot_schedule: */30 * * * *\n",
     ["stacks/Pulumi.x.yaml:3:25: an unquoted value starting with '*' is read as a YAML alias; quote it "
      "(e.g. snapshot_schedule: \"*/30 * * * *\")"]),
    ("a-list", "- config\n- more\n", ["stacks/Pulumi.x.yaml: must be a mapping with a `config:` key, not a list"]),
    ("empty", "", ["stacks/Pulumi.x.yaml: the file is empty; a stack file holds `config:` with the stack's keys"]),
    ("comments-only", "# nothing yet\n", ["stacks/Pulumi.x.yaml: the file is empty; a stack file holds `config:` with "
                                          "the stack's keys"]),
    ("config-a-string", "config: yes please\n",
     ["stacks/Pulumi.x.yaml: `config` must map keys (flakefleet:cluster, ...) to values, not a str"]),
    ("duplicate-keys", "config:\n  flakefleet:cluster: {name: a}\n  flakefleet:storage: {enabled: false}\n"
                       "  flakefleet:cluster: {name: b}\n  flakefleet:storage: {}\n",
     ["stacks/Pulumi.x.yaml:4:3: key 'flakefleet:cluster' is written twice (lines 2 and 4); keep one",
      "stacks/Pulumi.x.yaml:5:3: key 'flakefleet:storage' is written twice (lines 3 and 5); keep one"]),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in FILES], ids=[c[0] for c in FILES])
def test_a_broken_stack_file_is_one_line_per_problem_with_its_position(text, expected):
    with pytest.raises(ConfigError) as err:
        parse_stack_yaml(text, "stacks/Pulumi.x.yaml")
    assert err.value.problems == expected


def test_unquoted_dates_stay_the_text_written():
    config = parse_stack_yaml("config:\n  flakefleet:pools:\n    - labels: {since: 2024-01-01, at: 2024-01-01 10:00:00}\n", "f")
    assert config["flakefleet:pools"][0]["labels"] == {"since": "2024-01-01", "at": "2024-01-01 10:00:00"}


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in FILES[:3]], ids=[c[0] for c in FILES[:3]])
def test_plan_prints_file_problems_without_a_traceback(tmp_path, text, expected):
    (tmp_path / "Pulumi.x.yaml").write_text(text)
    proc = subprocess.run([sys.executable, "-m", "flakefleet", "plan", "--stack", "x", "--stacks-dir", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == ["flakefleet plan: stack x: " + e.replace("stacks/Pulumi.x.yaml", str(tmp_path / "Pulumi.x.yaml"))
                                        for e in expected]


# ----------------------------------------------------------------------------- 2. one bad field

ISOLATED = [
    ("bad-address-keeps-the-other-hosts",
     metal_stack(host("w-0", "192.168.50.20"), host("w-1", "192.168.50.300", KEY), host("w-2", "192.168.50.22")),
     ["flakefleet:pools[1].hosts[1].address: Input is not a valid IPv4 address"]),
    ("bad-name-keeps-the-other-hosts",
     metal_stack(host("W_0", "192.168.50.20"), host("w-1", "192.168.50.21", KEY)),
     ["flakefleet:pools[1].hosts[0].name: must be a lowercase DNS label (a-z, 0-9, '-', not starting or ending with '-')"]),
    ("bad-port-keeps-the-other-hosts",
     metal_stack(host("w-0", "192.168.50.20", ssh_port=70000), host("w-1", "192.168.50.21", KEY)),
     ["flakefleet:pools[1].hosts[0].ssh_port: Input should be less than or equal to 65535"]),
    ("the-only-bad-control-plane-is-not-a-missing-one",
     metal_stack(host("w-0", "192.168.50.20"), cp_hosts=[host("cp-0", "not-an-address", KEY)]),
     ["flakefleet:pools[0].hosts[0].address: Input is not a valid IPv4 address"]),
    ("mistyped-provider-asks-for-nothing-else",
     {**metal_stack(host("w-0", "192.168.50.20")), "pools": [
         {"name": "cp", "role": "control-plane", "provider": "metall",
          "hosts": [host("cp-0", "192.168.50.1", KEY)]},
         {"name": "workers", "role": "worker", "provider": "metal", "hosts": [host("w-0", "192.168.50.20")]}]},
     ["flakefleet:pools[0].provider: Input should be 'ec2' or 'metal'"]),
    ("a-bad-host-and-an-unrelated-real-problem",
     metal_stack(host("w-0", "192.168.50.20", KEY), host("w-1", "bad", KEY2), host("w-2", "192.168.50.20", KEY2)),
     ["flakefleet:pools[1].hosts[1].address: Input is not a valid IPv4 address",
      "flakefleet:pools[1].hosts[2].address: duplicate address 192.168.50.20 (also pools[1].hosts[0].address)"]),
]


@pytest.mark.parametrize(("cfg", "expected"), [c[1:] for c in ISOLATED], ids=[c[0] for c in ISOLATED])
def test_one_bad_field_reports_only_itself_and_real_problems(cfg, expected):
    assert found(cfg) == expected


# ----------------------------------------------------------------------------- 3. impossible values


def with_pool(index: int, **changes) -> dict:
    cfg = copy.deepcopy(base())
    cfg["pools"][index].update(changes)
    return cfg


IMPOSSIBLE = [
    ("unspecified-address", metal_stack(host("w-0", "0.0.0.0")),
     "flakefleet:pools[1].hosts[0].address: 0.0.0.0 is the unspecified address, not a host"),
    ("broadcast-address", metal_stack(host("w-0", "255.255.255.255")),
     "flakefleet:pools[1].hosts[0].address: 255.255.255.255 is reserved (or broadcast), not a host"),
    ("multicast-address", metal_stack(host("w-0", "224.0.0.251")),
     "flakefleet:pools[1].hosts[0].address: 224.0.0.251 is a multicast address, not a host"),
    ("reserved-address", metal_stack(host("w-0", "240.1.2.3")),
     "flakefleet:pools[1].hosts[0].address: 240.1.2.3 is reserved (or broadcast), not a host"),
    ("loopback-beside-real-hosts", metal_stack(host("w-0", "127.0.0.12")),
     "flakefleet:pools[1].hosts[0].address: 127.0.0.12 is a loopback address; only a stack whose hosts are all "
     "loopback test hosts may use one"),
    ("instance-type-typo", with_pool(1, instance_type="t3.lrage"),
     "flakefleet:pools[1].instance_type: 't3.lrage' is not an EC2 instance type; did you mean t3.large or t3a.large "
     "or t3.xlarge?"),
    ("instance-family-without-generation-letter", with_pool(1, instance_type="m6.large"),
     "flakefleet:pools[1].instance_type: 'm6.large' is not an EC2 instance type; did you mean m6i.large or m6g.large "
     "or m6a.large?"),
    ("derived-host-name-too-long", with_pool(1, name="w" * 62, count=12),
     "flakefleet:pools[1].name: host names " + "w" * 62 + "-N would be longer than 63 characters; shorten the pool name"),
    ("pod-cidr-too-small", {**base(), "cluster": {"name": "t", "pod_cidr": "10.42.0.0/23"}},
     "flakefleet:cluster.pod_cidr: 10.42.0.0/23 holds 2 nodes at k3s' /24 per node, but the stack has 6 hosts; use a "
     "shorter prefix (e.g. /21)"),
    ("pod-cidr-longer-than-a-node", {**base(), "cluster": {"name": "t", "pod_cidr": "10.42.0.0/25"}},
     "flakefleet:cluster.pod_cidr: 10.42.0.0/25 holds 0 nodes at k3s' /24 per node, but the stack has 6 hosts; use a "
     "shorter prefix (e.g. /21)"),
    ("cron-hour-24", {**base(), "dr": {"snapshot_schedule": "0 24 * * *"}},
     "flakefleet:dr.snapshot_schedule: '0 24 * * *' is not a valid cron schedule: Bad hour"),
    ("cron-minute-61", {**base(), "dr": {"snapshot_schedule": "61 */6 * * *"}},
     "flakefleet:dr.snapshot_schedule: '61 */6 * * *' is not a valid cron schedule: Bad minute"),
    ("cron-february-31", {**base(), "dr": {"snapshot_schedule": "0 0 31 2 *"}},
     "flakefleet:dr.snapshot_schedule: '0 0 31 2 *' is not a valid cron schedule: Bad day-of-month"),
    ("cron-three-fields", {**base(), "dr": {"snapshot_schedule": "0 * *"}},
     "flakefleet:dr.snapshot_schedule: '0 * *' is not a cron schedule: five fields (minute hour day-of-month month "
     "day-of-week)"),
]


@pytest.mark.parametrize(("cfg", "expected"), [c[1:] for c in IMPOSSIBLE], ids=[c[0] for c in IMPOSSIBLE])
def test_well_formed_but_impossible_values_are_refused(cfg, expected):
    problems = found(cfg, region=REGION)
    assert expected in problems, "\n".join(problems)


@pytest.mark.parametrize("schedule", ["0 */12 * * *", "*/30 * * * *", "@hourly", "@every 6h", "0 3 * * 1-5"])
def test_schedules_k3s_takes_are_accepted(schedule):
    assert found({**base(), "dr": {"snapshot_schedule": schedule}}, region=REGION) == []


def test_loopback_hosts_are_fine_in_a_loopback_test_fleet():
    cfg = metal_stack(host("w-0", "127.0.0.12"), cp_hosts=[host("cp-0", "127.0.0.11", KEY)])
    assert found(cfg) == []


# ----------------------------------------------------------------------------- 4. SSH keys


def key_line(kind: str, *fields: bytes) -> str:
    """An OpenSSH public key line from its wire fields (each a length-prefixed string)."""
    blob = b"".join(len(f).to_bytes(4, "big") + f for f in (kind.encode(), *fields))
    return f"{kind} {base64.b64encode(blob).decode()}"


SK_ED25519 = key_line("sk-ssh-ed25519@openssh.com", b"\x01" * 32, b"ssh:")
SK_ECDSA = key_line("sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", b"\x04" + b"\x02" * 64, b"ssh:")
RSA_1024 = key_line("ssh-rsa", b"\x01\x00\x01", b"\x00" + b"\xff" * 128)
RSA_4096 = key_line("ssh-rsa", b"\x01\x00\x01", b"\x00" + b"\xff" * 512)
ECDSA = key_line("ecdsa-sha2-nistp256", b"nistp256", b"\x04" + b"\x03" * 64)

KEYS = [
    ("host-key-rsa", "host", RSA_4096, "a ssh-rsa key, but the hosts serve only an ssh-ed25519 host key "
     "(nixos/common/openssh.nix): pin /etc/ssh/ssh_host_ed25519_key.pub"),
    ("host-key-ecdsa", "host", ECDSA, "a ecdsa-sha2-nistp256 key, but the hosts serve only an ssh-ed25519 host key "
     "(nixos/common/openssh.nix): pin /etc/ssh/ssh_host_ed25519_key.pub"),
    ("host-key-wrapped", "host", KEY[:61], "key data is not valid base64 (was it wrapped or truncated when copied?)"),
    ("host-key-cut-at-a-whole-block", "host", KEY[:60],
     "key data is cut short (a ssh-ed25519 key has more bytes): was it wrapped or truncated when copied?"),
    ("host-key-truncated", "host", "ssh-ed25519 " + base64.b64encode(base64.b64decode(KEY.split()[1])[:40]).decode(),
     "key data is cut short (a ssh-ed25519 key has more bytes): was it wrapped or truncated when copied?"),
    ("deploy-key-trailing-bytes", "deploy", key_line("ssh-ed25519", b"\x01" * 32, b"extra"),
     "key data has 9 bytes too many for a ssh-ed25519 key"),
    ("deploy-key-rsa-1024", "deploy", RSA_1024,
     "an RSA key shorter than 2048 bits; OpenSSH refuses keys under 1024 and 2048 is the least to use"),
    ("deploy-key-ecdsa-wrong-curve", "deploy", key_line("ecdsa-sha2-nistp256", b"nistp384", b"\x04" + b"\x01" * 96),
     "key data does not encode a ecdsa-sha2-nistp256 key"),
]


@pytest.mark.parametrize(("where", "key", "expected"), [c[1:] for c in KEYS], ids=[c[0] for c in KEYS])
def test_ssh_keys_are_checked_down_to_their_bytes(where, key, expected):
    if where == "host":
        cfg = metal_stack(host("w-0", "192.168.50.20", key))
        assert found(cfg) == [f"flakefleet:pools[1].hosts[0].ssh_host_key: {expected}"]
    else:
        cfg = {**metal_stack(host("w-0", "192.168.50.20")), "delivery": {"authorized_keys": [DEPLOY, key]}}
        assert found(cfg) == [f"flakefleet:delivery.authorized_keys[1]: {expected}"]


@pytest.mark.parametrize("key", [SK_ED25519 + " yubikey", SK_ECDSA, RSA_4096, ECDSA, DEPLOY], ids=[
    "sk-ssh-ed25519", "sk-ecdsa", "rsa-4096", "ecdsa", "ed25519"])
def test_every_key_type_openssh_authorizes_is_accepted_for_login(key):
    assert ssh_key_problem(key) is None
    assert found({**metal_stack(host("w-0", "192.168.50.20")), "delivery": {"authorized_keys": [key]}}) == []


# ----------------------------------------------------------------------------- 5. labels

LABELS = [
    ("topology.kubernetes.io/zone", True),
    ("topology.kubernetes.io/region", True),
    ("kubernetes.io/arch", True),
    ("kubernetes.io/os", True),
    ("node.kubernetes.io/instance-type", True),
    ("node.kubernetes.io/pool", True),
    ("kubelet.kubernetes.io/role", True),
    ("gpu.node.kubernetes.io/model", True),
    ("example.com/team", True),
    ("team", True),
    ("kubernetes.io/role", False),
    ("node-role.kubernetes.io/worker", False),
    ("k8s.io/anything", False),
    ("custom.k8s.io/anything", False),
    ("node-restriction.kubernetes.io/secure", False),
]


@pytest.mark.parametrize(("key", "allowed"), LABELS, ids=[k for k, _ in LABELS])
def test_labels_follow_the_kubelets_own_rule(key, allowed):
    assert kubelet_may_set(key) is allowed
    problems = found(with_pool(1, labels={key: "x"}), region=REGION)
    assert (problems == []) is allowed, problems


# ----------------------------------------------------------------------------- 6. namespaces

NAMESPACES = [
    ("flakefleets:network", "flakefleets:network: namespace 'flakefleets' is not 'flakefleet', so this key would be "
     "ignored; did you mean flakefleet:network?"),
    ("flakeflet:network", "flakeflet:network: namespace 'flakeflet' is not 'flakefleet', so this key would be "
     "ignored; did you mean flakefleet:network?"),
    ("flakefleat:dr", "flakefleat:dr: namespace 'flakefleat' is not 'flakefleet', so this key would be ignored; "
     "did you mean flakefleet:dr?"),
    ("falkefleet:storage", "falkefleet:storage: namespace 'falkefleet' is not 'flakefleet', so this key would be "
     "ignored; did you mean flakefleet:storage?"),
    ("Flakefleet:network", "Flakefleet:network: namespace 'Flakefleet' is not 'flakefleet', so this key would be "
     "ignored; did you mean flakefleet:network?"),
    ("flakefleet:netwrok", "flakefleet:netwrok: unknown stack key (did you mean network?) (known: cluster, network, "
     "pools, storage, delivery, dr, workloads, signing_key, server_token)"),
]


@pytest.mark.parametrize(("key", "expected"), NAMESPACES, ids=[k for k, _ in NAMESPACES])
def test_a_near_miss_namespace_is_named_not_ignored(key, expected):
    assert found(base(), region=REGION, raw_extra={key: json.dumps({})}) == [expected]


@pytest.mark.parametrize("key", ["aws:region", "pulumi:tags", "kubernetes:context", "fleet:x"])
def test_other_namespaces_are_left_alone(key):
    assert found(base(), region=REGION, raw_extra={key: json.dumps("x")}) == []


# ----------------------------------------------------------------------------- through the program


def test_the_program_reports_every_class_at_once_before_any_resource():
    """What `pulumi up` prints for a stack with problems of several classes: the same lines as
    `plan`, one each, no traceback, and nothing registered."""
    import pulumi

    from tests.harness import FleetMocks, RecordingMonitor, run_program

    cfg = metal_stack(host("w-0", "192.168.50.300", KEY), host("w-1", "224.0.0.1"))
    cfg["pools"][1]["labels"] = {"kubernetes.io/role": "worker"}
    config = {f"flakefleet:{k}": json.dumps(v) for k, v in cfg.items()}
    config["flakefleets:dr"] = json.dumps({})
    monitor = RecordingMonitor(FleetMocks())
    with pytest.raises(pulumi.RunError) as err:
        run_program(config, stack="local", monitor=monitor)
    lines = str(err.value).splitlines()
    assert lines == [
        "invalid configuration for stack local:",
        "  flakefleets:dr: namespace 'flakefleets' is not 'flakefleet', so this key would be ignored; did you mean "
        "flakefleet:dr?",
        "  flakefleet:pools[1].hosts[0].address: Input is not a valid IPv4 address",
        "  flakefleet:pools[1].hosts[1].address: 224.0.0.1 is a multicast address, not a host",
        "  flakefleet:pools[1].labels.kubernetes.io/role: kubelets may set only their own labels under kubernetes.io/ "
        "and k8s.io/ (e.g. topology.kubernetes.io/zone, node.kubernetes.io/*); use node.kubernetes.io/ or your own prefix",
    ]
    assert monitor.records == []


# ----------------------------------------------------------------------------- 7. where systems are built

ARM = {"name": "arm", "role": "worker", "instance_type": "m7g.large", "arch": "aarch64", "count": 1}
ARM_BUILDER = {"name": "graviton", "address": "10.9.0.5", "host_key": KEY, "systems": ["aarch64"]}


def with_build(pool_extra: dict | None = None, **delivery) -> dict:
    cfg = base()
    cfg["pools"].append({**ARM, **(pool_extra or {})})
    cfg["delivery"].update(delivery)
    return cfg


BUILDS = [
    ("aarch64-on-x86-deployer", with_build(), [
        "flakefleet:delivery.build: pool arm is aarch64 and this deployer is x86_64, so it cannot build its system "
        "here: set `build: target` (the hosts build it), or `build: <builder>` with an aarch64 builder in "
        "delivery.builders, or deploy from an aarch64 machine"]),
    ("aarch64-pool-says-local", with_build({"build": "local"}), [
        "flakefleet:pools[3].build: pool arm is aarch64 and this deployer is x86_64, so it cannot build its system "
        "here: set `build: target` (the hosts build it), or `build: <builder>` with an aarch64 builder in "
        "delivery.builders, or deploy from an aarch64 machine"]),
    ("unknown-builder", with_build({"build": "gravitn"}, builders=[ARM_BUILDER]), [
        "flakefleet:pools[3].build: `gravitn` is neither `local`, `target` nor a builder (delivery.builders: graviton)"]),
    ("builder-of-the-wrong-arch", with_build({"build": "x86box"}, builders=[{**ARM_BUILDER, "name": "x86box",
                                                                             "systems": ["x86_64"]}]), [
        "flakefleet:pools[3].build: builder x86box builds x86_64, not aarch64 (pool arm)"]),
    ("builder-named-like-a-mode", with_build({"build": "target"}, builders=[{**ARM_BUILDER, "name": "target"}]), [
        "flakefleet:delivery.builders[0].name: `target` is a build mode; name the builder otherwise"]),
    ("builder-key-dss", with_build({"build": "graviton"}, builders=[{**ARM_BUILDER, "host_key": "ssh-dss AAAA"}]), [
        "flakefleet:delivery.builders[0].host_key: "]),
    ("cache-url-not-http", with_build({"build": "target"}, cache={"url": "s3://bucket"}), [
        "flakefleet:delivery.cache.url: `s3://bucket` is not an http(s) URL"]),
    ("fine: target", with_build({"build": "target"}), []),
    ("fine: stack-wide target", with_build(build="target"), []),
    ("fine: aarch64 builder", with_build({"build": "graviton"}, builders=[ARM_BUILDER]), []),
    # A builder is not one of our NixOS hosts: its sshd serves whatever host keys it has.
    ("fine: builder-rsa-host-key", with_build({"build": "graviton"}, builders=[{**ARM_BUILDER, "host_key": RSA_4096}]), []),
    ("fine: builder-ecdsa-host-key", with_build({"build": "graviton"}, builders=[{**ARM_BUILDER, "host_key": ECDSA}]), []),
]


@pytest.mark.parametrize(("cfg", "expected"), [c[1:] for c in BUILDS], ids=[c[0] for c in BUILDS])
def test_every_pool_names_a_way_to_build_its_architecture(cfg, expected, monkeypatch):
    monkeypatch.setattr("flakefleet.config.delivery.deployer_arch", lambda: "x86_64")
    got = found(cfg, REGION)
    assert len(got) == len(expected), got
    for line, want in zip(got, expected):
        assert line.startswith(want), line  # the key-type reason itself is tested with the keys above


def test_an_aarch64_deployer_builds_aarch64_pools_itself(monkeypatch):
    monkeypatch.setattr("flakefleet.config.delivery.deployer_arch", lambda: "aarch64")
    problems = found(with_build(), REGION)
    assert problems and all("pool arm" not in p for p in problems)  # now the x86_64 pools are the foreign ones
    assert any("pool workers is x86_64 and this deployer is aarch64" in p for p in problems)


def test_a_bad_arch_or_build_is_not_also_a_build_problem(monkeypatch):
    monkeypatch.setattr("flakefleet.config.delivery.deployer_arch", lambda: "x86_64")
    for pool, field in [({"arch": "arm64"}, "arch"), ({"build": 7}, "build")]:
        problems = found(with_build(pool), REGION)
        assert problems == [p for p in problems if p.startswith(f"flakefleet:pools[3].{field}:")] != [], problems
