"""Tier 1: the last classes of bad stack files (issue 21), each fixed at its root: the stack-file
reader reads what the Pulumi CLI reads, rules between keys never read a dropped or reserved
value, every problem shows in one run, accepted values that cannot work are refused, and every
line names a key path that exists with a reason that applies."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from flakefleet.config import ConfigError
from flakefleet.config.stackfile import parse_stack_yaml
from tests.test_config import base
from tests.test_config_classes import (
    ARM_BUILDER,
    REGION,
    SK_ED25519,
    found,
    host,
    metal_stack,
    with_build,
    with_pool,
)


# ----------------------------------------------------------------------------- 8. the reader is the Pulumi CLI's
# What gopkg.in/yaml.v3 (the CLI's reader, sdk/go/common/encoding/marshal.go) accepts is accepted,
# what it refuses is one line at its position.

READER = [
    ("latin1-in-a-comment", b"# caf\xe9 du coin\nconfig:\n  flakefleet:cluster: {name: a}\n",
     ["stacks/Pulumi.x.yaml:1:6: byte 0xe9 is not UTF-8 text (Pulumi reads stack files as UTF-8; an editor saved it "
      "in another encoding, e.g. Latin-1): save the file as UTF-8"]),
    ("latin1-in-a-value", b"config:\n  flakefleet:cluster: {name: \xe9t\xe9}\n",
     ["stacks/Pulumi.x.yaml:2:30: byte 0xe9 is not UTF-8 text (Pulumi reads stack files as UTF-8; an editor saved it "
      "in another encoding, e.g. Latin-1): save the file as UTF-8"]),
    ("latin1-after-a-bom-and-utf8", "\ufeff# été\n".encode() + b"# \xe9\nconfig: {}\n",
     ["stacks/Pulumi.x.yaml:2:3: byte 0xe9 is not UTF-8 text (Pulumi reads stack files as UTF-8; an editor saved it "
      "in another encoding, e.g. Latin-1): save the file as UTF-8"]),
    ("a-control-character", b"config:\n  flakefleet:cluster: {name: \"a\x07b\"}\n",
     ["stacks/Pulumi.x.yaml:2:32: character U+0007 is not allowed in a YAML file (control characters are refused); "
      "remove it"]),
    ("an-alias-to-a-misspelt-anchor",
     b"config:\n  x-defaults: &workers {role: worker}\n  flakefleet:pools:\n    - <<: *wrokers\n      name: w\n",
     ["stacks/Pulumi.x.yaml:4:11: *wrokers names no anchor (anchors: &workers); did you mean *workers?"]),
    ("an-alias-before-its-anchor", b"config:\n  a: *later\n  b: &later 1\n",
     ["stacks/Pulumi.x.yaml:2:6: *later comes before its anchor &later; an anchor must be defined before its alias"]),
    ("a-merge-of-a-scalar", b"config:\n  a: &a 1\n  b:\n    <<: *a\n",
     ["stacks/Pulumi.x.yaml:2:6: a merge key (<<) takes a mapping or a list of mappings"]),
    ("an-unquoted-cron-with-a-digit", b"config:\n  flakefleet:dr:\n    snapshot_schedule: *5 * * * *\n",
     ["stacks/Pulumi.x.yaml:3:24: an unquoted value starting with '*' is read as a YAML alias; quote it"]),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in READER], ids=[c[0] for c in READER])
def test_what_the_pulumi_cli_refuses_is_one_line_at_its_position(data, expected):
    with pytest.raises(ConfigError) as err:
        parse_stack_yaml(data, "stacks/Pulumi.x.yaml")
    assert err.value.problems == expected


ACCEPTED = [
    ("merge-key", "config:\n  x-pool: &pool {role: worker, provider: metal}\n  flakefleet:pools:\n"
                  "    - <<: *pool\n      name: w\n",
     [{"role": "worker", "provider": "metal", "name": "w"}]),
    ("merge-key-explicit-wins", "config:\n  x-pool: &pool {role: worker, name: base}\n  flakefleet:pools:\n"
                                "    - <<: *pool\n      name: w\n",
     [{"role": "worker", "name": "w"}]),
    ("merge-of-several-first-wins", "config:\n  a: &a {role: worker, name: a}\n  b: &b {role: control-plane, "
                                    "provider: metal}\n  flakefleet:pools:\n    - <<: [*a, *b]\n",
     [{"role": "worker", "name": "a", "provider": "metal"}]),
    ("utf8-byte-order-mark", "\ufeffconfig:\n  flakefleet:pools: [{name: w}]\n", [{"name": "w"}]),
    ("utf16-with-its-mark", "\ufeffconfig:\n  flakefleet:pools: [{name: w}]\n".encode("utf-16"), [{"name": "w"}]),
    ("utf8-letters", "# café\nconfig:\n  flakefleet:pools: [{name: w, labels: {team: é}}]\n",
     [{"name": "w", "labels": {"team": "é"}}]),
]


@pytest.mark.parametrize(("data", "pools"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_what_the_pulumi_cli_accepts_is_read_as_it_reads_it(data, pools):
    text = data if isinstance(data, bytes) else data.encode()
    assert parse_stack_yaml(text, "stacks/Pulumi.x.yaml")["flakefleet:pools"] == pools


def test_a_stack_file_is_read_as_bytes_so_a_latin1_file_is_one_line(tmp_path):
    (tmp_path / "Pulumi.x.yaml").write_bytes(b"# \xe9\nconfig: {}\n")
    proc = subprocess.run([sys.executable, "-m", "flakefleet", "plan", "--stack", "x", "--stacks-dir", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0].startswith(f"flakefleet plan: stack x: {tmp_path / 'Pulumi.x.yaml'}:1:3: byte 0xe9 is not UTF-8 text")


# ----------------------------------------------------------------------------- 9. rules on dropped or reserved values
# A value that was dropped as invalid (or a name reserved for something else) is not read by the
# rules between keys as its default: only the value's own line is reported.

DROPPED = [
    ("misspelt-cni-with-a-cilium-block", {**base(), "cluster": {"name": "t", "cni": "cillium", "cilium": {"hubble": True}}},
     ["flakefleet:cluster.cni: Input should be 'flannel' or 'cilium'"]),
    ("bad-pod-cidr-not-compared-as-its-default",
     {**base(), "network": {**base()["network"], "vpc_cidr": "10.42.0.0/16"}, "cluster": {"name": "t", "pod_cidr": "10.42.0.0/33"}},
     ["flakefleet:cluster.pod_cidr: Input is not a valid IPv4 network"]),
    ("bad-vpc-cidr-not-compared-as-its-default",
     {**base(), "network": {**base()["network"], "vpc_cidr": "10.0.0.0/33"}, "cluster": {"name": "t", "pod_cidr": "10.0.0.0/14"}},
     ["flakefleet:network.vpc_cidr: Input is not a valid IPv4 network"]),
    ("bad-pod-cidr-not-sized-as-its-default",
     {**base(), "cluster": {"name": "t", "pod_cidr": "10.42.0.0/16/8"}},
     ["flakefleet:cluster.pod_cidr: Input is not a valid IPv4 network"]),
    ("build-local-is-not-a-builder-named-local",
     with_build({"build": "target"}, builders=[{**ARM_BUILDER, "name": "local"}]),
     ["flakefleet:delivery.builders[0].name: `local` is a build mode; name the builder otherwise"]),
    ("build-target-is-not-a-builder-named-target",
     {**base(), "delivery": {**base()["delivery"], "build": "target",
                             "builders": [{**ARM_BUILDER, "name": "target", "systems": ["aarch64"]}]}},
     ["flakefleet:delivery.builders[0].name: `target` is a build mode; name the builder otherwise"]),
    ("restore-with-a-misspelt-provider",
     {**base(), "dr": {"restore_from": "latest", "restore_bucket": "old"},
      "pools": [{**base()["pools"][0], "provider": "ec3"}, *base()["pools"][1:]]},
     ["flakefleet:pools[0].provider: Input should be 'ec2' or 'metal'",
      "flakefleet:dr.restore_from: needs flakefleet:server_token, the original cluster's server token "
      "(pulumi stack output --show-secrets k3s_server_token on the old stack)"]),
]


@pytest.mark.parametrize(("cfg", "expected"), [c[1:] for c in DROPPED], ids=[c[0] for c in DROPPED])
def test_rules_between_keys_never_read_a_dropped_or_reserved_value(cfg, expected, monkeypatch):
    monkeypatch.setattr("flakefleet.config.delivery.deployer_arch", lambda: "x86_64")
    assert found(cfg, REGION) == expected


# ----------------------------------------------------------------------------- 10. all at once, not on the next run


def too_big(**cluster) -> dict:
    """A pool that does not fit a /22 VPC's address blocks."""
    cfg = copy.deepcopy(base())
    cfg["network"]["vpc_cidr"] = "10.0.0.0/22"
    cfg["pools"][1]["count"] = 400
    cfg["cluster"].update(cluster)
    return cfg


TOO_BIG = ("flakefleet:pools[1].count: 134 hosts per zone need 17 free address blocks of 8; widen network.vpc_cidr, "
           "add zones or shrink the pool")
NEXT_RUN = [
    ("too-big-for-the-vpc-and-the-pod-cidr", too_big(), [
        TOO_BIG, "flakefleet:cluster.pod_cidr: 10.42.0.0/16 holds 256 nodes at k3s' /24 per node, but the stack has 404 "
        "hosts; use a shorter prefix (e.g. /15)"]),
    ("too-big-for-the-vpc-and-a-bad-label", {**too_big(pod_cidr="10.64.0.0/14"), "pools": [
        *too_big()["pools"][:1], {**too_big()["pools"][1], "labels": {"team": "a b"}}, *too_big()["pools"][2:]]}, [
        "flakefleet:pools[1].labels.team: value 'a b' is not a valid Kubernetes label value", TOO_BIG]),
    ("pinned-overlap-and-a-bad-schedule", {**base(), "dr": {"snapshot_schedule": "hourly"}, "pools": [
        {**base()["pools"][0], "ip_block": 3}, {**base()["pools"][1], "ip_block": 3}, base()["pools"][2]]}, [
        "flakefleet:pools[1].ip_block: blocks 3-3 overlap pool cp",
        "flakefleet:dr.snapshot_schedule: 'hourly' is not a cron schedule: five fields (minute hour day-of-month month "
        "day-of-week)"]),
    ("a-bad-builder-field-and-a-misspelt-builder-name",
     with_build({"build": "gravitn"}, builders=[ARM_BUILDER, {**ARM_BUILDER, "name": "spare", "port": 0}]), [
        "flakefleet:delivery.builders[1].port: Input should be greater than or equal to 1",
        "flakefleet:pools[3].build: `gravitn` is neither `local`, `target` nor a builder (delivery.builders: graviton, spare)"]),
    ("a-builder-with-a-bad-field-is-not-unknown",
     with_build({"build": "spare"}, builders=[{**ARM_BUILDER, "name": "spare", "address": "10.9.0.300"}]), [
        "flakefleet:delivery.builders[0].address: Input is not a valid IPv4 address"]),
    ("too-big-and-a-bad-cache-region", {**too_big(pod_cidr="10.64.0.0/14"),
                                        "delivery": {**base()["delivery"], "cache": {"region": "eu-west1"}}}, [
        TOO_BIG, "flakefleet:delivery.cache.region: `eu-west1` is not an AWS region (did you mean eu-west-1?)"]),
]


@pytest.mark.parametrize(("cfg", "expected"), [c[1:] for c in NEXT_RUN], ids=[c[0] for c in NEXT_RUN])
def test_every_problem_is_reported_in_one_run_not_the_next(cfg, expected, monkeypatch):
    monkeypatch.setattr("flakefleet.config.delivery.deployer_arch", lambda: "x86_64")
    assert found(cfg, REGION) == expected


# ----------------------------------------------------------------------------- 11. accepted values that cannot work

GPU_POOL = {"name": "gpu", "role": "worker", "instance_type": "g6.xlarge", "count": 1, "gpu": "nvidia"}
CANNOT_WORK = [
    ("duplicate-builder-names", with_build({"build": "graviton"}, builders=[ARM_BUILDER, {**ARM_BUILDER,
                                                                                         "address": "10.9.0.6"}]),
     ["flakefleet:delivery.builders[1].name: duplicate builder name 'graviton' (also builders[0])"]),
    ("cache-bucket-as-a-url", {**base(), "delivery": {**base()["delivery"], "cache": {"bucket": "s3://ff-cache/nix"}}},
     ["flakefleet:delivery.cache.bucket: `s3://ff-cache/nix` is a URL or ARN; give the bucket's name alone (`ff-cache`)"]),
    ("cache-bucket-uppercase", {**base(), "delivery": {**base()["delivery"], "cache": {"bucket": "FF_Cache"}}},
     ["flakefleet:delivery.cache.bucket: `FF_Cache` is not an S3 bucket name: 3-63 characters of lowercase letters, "
      "digits, '.' and '-', starting and ending with a letter or digit"]),
    ("cache-region-missing-a-dash", {**base(), "delivery": {**base()["delivery"], "cache": {"region": "eu-west1"}}},
     ["flakefleet:delivery.cache.region: `eu-west1` is not an AWS region (did you mean eu-west-1?)"]),
    ("restore-bucket-as-an-arn", {**base(), "dr": {"restore_bucket": "arn:aws:s3:::old-snapshots"}},
     ["flakefleet:dr.restore_bucket: `arn:aws:s3:::old-snapshots` is a URL or ARN; give the bucket's name alone "
      "(`old-snapshots`)"]),
    ("restore-region-typo", {**base(), "dr": {"restore_region": "eu-wset-1"}},
     ["flakefleet:dr.restore_region: `eu-wset-1` is not an AWS region (did you mean eu-west-1?)"]),
    ("taint-twice-by-key-and-effect", with_pool(1, taints=[{"key": "dedicated", "value": "a", "effect": "NoSchedule"},
                                                           {"key": "dedicated", "value": "b", "effect": "NoSchedule"}]),
     ["flakefleet:pools[1].taints[1]: a second dedicated:NoSchedule taint (also taints[0]); Kubernetes refuses two "
      "taints of one key and effect: keep one"]),
    ("gpu-taint-written-by-hand", {**base(), "pools": [*base()["pools"], {**GPU_POOL, "taints": [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}]},
     ["flakefleet:pools[3].taints[0]: `gpu: nvidia` adds the taint nvidia.com/gpu=present:NoSchedule itself; remove "
      "this one (Kubernetes refuses two taints of one key and effect)"]),
    ("workload-the-flake-does-not-have", {**base(), "workloads": [{"name": "helo", "pools": ["workers"]}]},
     ["flakefleet:workloads[0].name: the flake has no workload 'helo' (did you mean hello?) (standin/workloads/ has: "
      "hello)"]),
    ("region-missing-a-dash", {**metal_stack(host("w-0", "192.168.50.20")), "storage": {"enabled": True}},
     ["aws:region: `eu-west1` is not an AWS region (did you mean eu-west-1?)"]),
]


@pytest.mark.parametrize(("cfg", "expected"), [c[1:] for c in CANNOT_WORK], ids=[c[0] for c in CANNOT_WORK])
def test_values_that_cannot_work_are_refused(cfg, expected, monkeypatch):
    monkeypatch.setattr("flakefleet.config.delivery.deployer_arch", lambda: "x86_64")
    region = "eu-west1" if expected[0].startswith("aws:region") else REGION
    assert found(cfg, region) == expected


def test_the_same_taint_key_with_another_effect_is_fine():
    cfg = with_pool(1, taints=[{"key": "dedicated", "effect": "NoSchedule"}, {"key": "dedicated", "effect": "NoExecute"}])
    assert found(cfg, REGION) == []


def test_the_real_flakes_workloads_are_the_files_its_default_nix_lists():
    """flakefleet/facts/flake.py names a flake's workloads by its files: nixos/workloads/default.nix
    must list exactly those (`name = import ./name.nix ...`)."""
    import re

    from flakefleet.facts.flake import DEFAULT_FLAKE, workload_names

    listed = re.findall(r"^\s*([a-z0-9-]+) = import \./([a-z0-9-]+)\.nix", (DEFAULT_FLAKE / "workloads" / "default.nix")
                        .read_text(), re.M)
    assert all(name == file for name, file in listed)
    assert sorted(name for name, _ in listed) == workload_names(DEFAULT_FLAKE)


# ----------------------------------------------------------------------------- 12. paths that exist, reasons that apply

PATHS = [
    ("max-unavailable-a-fraction", {**base(), "delivery": {**base()["delivery"], "max_unavailable": 1.5}},
     ["flakefleet:delivery.max_unavailable: Input should be a valid integer or a valid string"]),
    ("max-unavailable-a-list", {**base(), "delivery": {**base()["delivery"], "max_unavailable": ["10%"]}},
     ["flakefleet:delivery.max_unavailable: Input should be a valid integer or a valid string"]),
    ("max-unavailable-a-mapping", {**base(), "delivery": {**base()["delivery"], "max_unavailable": {"count": 3}}},
     ["flakefleet:delivery.max_unavailable: Input should be a valid integer or a valid string"]),
    ("a-label-called-int-keeps-its-name", with_pool(1, labels={"int": 5}),
     ["flakefleet:pools[1].labels.int: Input should be a valid string"]),
    ("builder-host-key-of-a-user-key-type",
     with_build({"build": "graviton"}, builders=[{**ARM_BUILDER, "host_key": SK_ED25519}]),
     ["flakefleet:delivery.builders[0].host_key: a sk-ssh-ed25519@openssh.com key cannot be a host key; use one of "
      "ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521"]),
    ("builder-host-key-dss",
     with_build({"build": "graviton"}, builders=[{**ARM_BUILDER, "host_key": "ssh-dss AAAAB3NzaC1kc3M="}]),
     ["flakefleet:delivery.builders[0].host_key: must be an OpenSSH public key line '<type> <base64>' with type one "
      "of ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, ssh-ed25519, ssh-rsa"]),
]


@pytest.mark.parametrize(("cfg", "expected"), [c[1:] for c in PATHS], ids=[c[0] for c in PATHS])
def test_problems_name_key_paths_that_exist_and_reasons_that_apply(cfg, expected, monkeypatch):
    monkeypatch.setattr("flakefleet.config.delivery.deployer_arch", lambda: "x86_64")
    assert found(cfg, REGION) == expected
