"""Tier 1: a metal pool's hosts in a file of their own (`hosts_file`), read by the same rules as
hosts written inline, and the stack config the engine hands the program staying small whatever
the fleet (the engine passes it in one environment variable, which Linux caps at 128 KiB)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flakefleet.config import ConfigError, parse_stack_config
from flakefleet.plan.inventory import plan_inventory
from tests import stackgen

MAX_ARG_STRLEN = 128 * 1024  # Linux: the longest single environment string (include/uapi/linux/binfmts.h)


def host_key(n: int) -> str:
    seed = hashlib.sha256(f"flakefleet hostfiles test {n}".encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def hosts(prefix: str, count: int, first: int = 0) -> list[dict]:
    return [{"name": f"{prefix}-{k}", "address": f"10.{n // 64000 % 256}.{n // 250 % 256}.{n % 250 + 1}",
             "ssh_host_key": host_key(n)} for k in range(count) for n in [first + k]]


def stack(workers: dict) -> dict[str, str]:
    """A bring-your-own stack: three control planes inline, the workers pool as given."""
    return {
        # Room for 5,000 nodes' pod ranges (k3s gives each a /24).
        "flakefleet:cluster": json.dumps({"name": "ff-byo", "pod_cidr": "10.64.0.0/11"}),
        "flakefleet:storage": json.dumps({"enabled": False}),
        "flakefleet:delivery": json.dumps({"authorized_keys": [stackgen.DEPLOY_KEY]}),
        "flakefleet:pools": json.dumps([
            {"name": "cp", "role": "control-plane", "provider": "metal", "hosts": hosts("cp", 3, 1_000_000)},
            {"name": "workers", "role": "worker", "provider": "metal", **workers}]),
    }


def write(directory: Path, relative: str, text: str) -> None:
    (directory / relative).parent.mkdir(parents=True, exist_ok=True)
    (directory / relative).write_text(text)


def problems(raw: dict, stacks_dir: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_stack_config(raw, None, None, stacks_dir)
    return err.value.problems


def test_a_pool_reads_its_hosts_from_a_file_as_if_they_were_written_inline(tmp_path):
    workers = hosts("w", 40)
    write(tmp_path, "inventory/byo-workers.yaml", yaml.safe_dump(workers))
    from_file = parse_stack_config(stack({"hosts_file": "inventory/byo-workers.yaml"}), None, None, tmp_path)
    inline = parse_stack_config(stack({"hosts": workers}), None, None, tmp_path)
    assert from_file.pool("workers").hosts == inline.pool("workers").hosts
    assert plan_inventory(from_file).hosts == plan_inventory(inline).hosts
    assert from_file.pool("workers").hosts_file == "inventory/byo-workers.yaml"


@pytest.mark.parametrize(("workers", "files", "expected"), [
    ({"hosts_file": "/etc/hosts.yaml"}, {}, ["flakefleet:pools[1].hosts_file: '/etc/hosts.yaml' must be a relative path "
                                            "under stacks/ (no `..`, not absolute): the file goes with the stack"]),
    ({"hosts_file": "../secrets/w.yaml"}, {}, ["flakefleet:pools[1].hosts_file: '../secrets/w.yaml' must be a relative "
                                               "path under stacks/ (no `..`, not absolute): the file goes with the stack"]),
    ({"hosts_file": "inventory/w.json"}, {}, ["flakefleet:pools[1].hosts_file: 'inventory/w.json' must be a YAML file "
                                              "(.yaml or .yml)"]),
    ({"hosts_file": 3}, {}, ["flakefleet:pools[1].hosts_file: must be a path under stacks/, e.g. "
                             "inventory/<stack>-<pool>.yaml"]),
    ({"hosts_file": "inventory/w.yaml", "hosts": []}, {"inventory/w.yaml": "[]"},
     ["flakefleet:pools[1].hosts_file: not with `hosts`: the pool's hosts are listed in the stack or in the file, not both"]),
    ({"hosts_file": "inventory/nosuch.yaml"}, {}, ["flakefleet:pools[1].hosts_file: stacks/inventory/nosuch.yaml: cannot "
                                                   "read it (No such file or directory)"]),
    ({"hosts_file": "inventory/w.yaml"}, {"inventory/w.yaml": "name: w-0\n"},
     ["flakefleet:pools[1].hosts_file: stacks/inventory/w.yaml: must be a list of hosts (- name: ..., address: ..., "
      "ssh_host_key: ...), not a dict"]),
    ({"hosts_file": "inventory/w.yaml"}, {"inventory/w.yaml": ""},
     ["flakefleet:pools[1].hosts_file: stacks/inventory/w.yaml: must be a list of hosts (- name: ..., address: ..., "
      "ssh_host_key: ...), not empty"]),
    ({"hosts_file": "inventory/w.yaml"}, {"inventory/w.yaml": "- name: w-0\n  name: w-1\n"},
     ["flakefleet:pools[1].hosts_file: stacks/inventory/w.yaml:2:3: key 'name' is written twice (lines 1 and 2); keep one"]),
], ids=["absolute", "dotdot", "not-yaml", "not-text", "both", "missing", "mapping", "empty", "duplicate-key"])
def test_a_bad_hosts_file_is_one_line_naming_the_key_and_the_file(tmp_path, workers, files, expected):
    for relative, text in files.items():
        write(tmp_path, relative, text)
    assert problems(stack(workers), tmp_path) == expected  # and no "hosts: required" beside it


def test_an_ec2_pool_takes_no_hosts_file(tmp_path):
    raw = stack({"hosts_file": "inventory/w.yaml"})
    pools = json.loads(raw["flakefleet:pools"])
    pools[1] = {"name": "workers", "role": "worker", "instance_type": "t3.large", "count": 1,
                "hosts_file": "inventory/w.yaml"}
    write(tmp_path, "inventory/w.yaml", yaml.safe_dump(hosts("w", 1)))
    found = problems({**raw, "flakefleet:pools": json.dumps(pools), "flakefleet:storage": json.dumps({})}, tmp_path)
    assert ("flakefleet:pools[1].hosts_file: only for provider metal (bring-your-own hosts); an ec2 pool's hosts are "
            "created from count") in found


def test_each_problem_of_a_host_in_the_file_names_the_file_its_line_and_key_all_at_once(tmp_path):
    good = hosts("w", 3)
    text = yaml.safe_dump([good[0], {**good[1], "address": "10.0.0.300"}, {"name": "w-2", "adress": "10.0.0.9",
                                                                            "ssh_host_key": good[2]["ssh_host_key"]}])
    write(tmp_path, "inventory/w.yaml", text)
    raw = {**stack({"hosts_file": "inventory/w.yaml"}), "flakefleet:cluster": json.dumps({"name": "Bad Name"})}
    found = problems(raw, tmp_path)
    starts = [i + 1 for i, row in enumerate(text.splitlines()) if row.startswith("- ")]
    assert f"stacks/inventory/w.yaml:{starts[1]}: flakefleet:pools[1].hosts[1].address: Input is not a valid IPv4 address" in found
    assert f"stacks/inventory/w.yaml:{starts[2]}: flakefleet:pools[1].hosts[2].adress: unknown key (did you mean address?)" in found
    assert any(p.startswith("flakefleet:cluster.name: ") for p in found)  # the stack's own problems in the same report


def engine_config_variable(raw: dict[str, str]) -> int:
    """Bytes of the one environment string the engine gives the program its config in:
    `PULUMI_CONFIG=<JSON of key -> value text>` (pulumi/runtime/config.py: get_config_env)."""
    return len(("PULUMI_CONFIG=" + json.dumps(raw)).encode())


def test_five_thousand_hosts_in_a_file_keep_the_engines_config_far_below_the_limit(tmp_path):
    workers = hosts("w", 5000)
    write(tmp_path, "inventory/byo-workers.yaml", yaml.safe_dump(workers))
    raw = stack({"hosts_file": "inventory/byo-workers.yaml"})
    cfg = parse_stack_config(raw, None, None, tmp_path)
    assert len(plan_inventory(cfg).hosts) == 5003
    assert engine_config_variable(raw) < 4 * 1024  # a few KiB, whatever the fleet
    # The same fleet written inline could not start: the engine's fork/exec of the program fails.
    assert engine_config_variable(stack({"hosts": workers})) > MAX_ARG_STRLEN
