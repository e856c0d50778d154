"""Tier 1: the offline `plan` command, and the docs generated from the models."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flakefleet.__main__ import main
from scripts.config_reference import ROOT, SECTIONS


def test_plan_prints_every_host(capsys):
    assert main(["plan", "--stack", "prod"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stack prod: 12 hosts, API https://10.30.0.4:6443")
    assert "metal-2" in out and "10.30." in out


def test_plan_reports_bad_stack_with_key_paths(tmp_path, capsys):
    (tmp_path / "Pulumi.broken.yaml").write_text(
        "config:\n  flakefleet:cluster: {name: x}\n  flakefleet:pools:\n"
        "    - {name: cp, role: control-plane, provider: metal, hosts: [{name: a, address: 10.1.1.1}]}\n"
        "    - {name: cp, role: worker, provider: metal, hosts: [{name: b, address: 10.1.1.2}]}\n"
        "  flakefleet:storage: {enabled: false}\n"
    )
    assert main(["plan", "--stack", "broken", "--stacks-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert "flakefleet plan: stack broken: flakefleet:pools[1].name: duplicate pool name 'cp' (also pools[0])" in err
    assert any(line.startswith("flakefleet plan: stack broken: flakefleet:pools[0].hosts[0].ssh_host_key: required")
               for line in err)
    assert "Traceback" not in "\n".join(err)


def test_plan_unknown_stack(capsys):
    assert main(["plan", "--stack", "nope"]) == 1
    assert "flakefleet plan: --stack nope: no stacks/Pulumi.nope.yaml" in capsys.readouterr().err


def test_config_reference_in_readme_is_current():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("key", "model"), SECTIONS, ids=[k for k, _ in SECTIONS])
def test_every_field_documents_its_default(key, model):
    for name, field in model.model_fields.items():
        text = field.description or ""
        assert "Default" in text or "Required" in text, f"{key}.{name}: {text!r}"


def test_nixos_configurations_file_is_current():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "nixos_configurations.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_local_stack_pins_the_demo_hosts_test_only_keys():
    from flakefleet.config import DEMO_DEPLOY_KEY_BLOB
    from flakefleet.config.stackfile import read_stack_file
    from scripts.demo_keys import DEPLOY_KEY_COMMENT, DEPLOY_KEY_NAME, demo_public_key

    raw = read_stack_file("local")
    pins = {h["name"]: h["ssh_host_key"] for p in json.loads(raw["flakefleet:pools"]) for h in p["hosts"]}
    assert pins == {name: demo_public_key(name) for name in ("cp-0", "worker-0", "worker-1")}
    assert json.loads(raw["flakefleet:delivery"])["authorized_keys"] == [demo_public_key(DEPLOY_KEY_NAME, DEPLOY_KEY_COMMENT)]
    assert demo_public_key(DEPLOY_KEY_NAME).split()[1] == DEMO_DEPLOY_KEY_BLOB


def test_the_demo_deploy_key_is_refused_beyond_loopback_hosts():
    from flakefleet.config import ConfigError, parse_stack_config
    from flakefleet.config.stackfile import read_stack_file

    local = read_stack_file("local")
    dev = read_stack_file("dev")
    dev["flakefleet:delivery"] = local["flakefleet:delivery"]
    with pytest.raises(ConfigError) as err:
        parse_stack_config(dev, dev.get("aws:region"))
    assert err.value.problems == [
        "flakefleet:delivery.authorized_keys[0]: the demo's test-only deploy key (its private half is public, see "
        "scripts/demo.py) may only be authorized on loopback test hosts"
    ]
    parse_stack_config(local)  # the local stack's loopback hosts may use it


def test_plan_with_outputs_names_the_hosts_that_reboot(tmp_path, capsys):
    from tests.conftest import require_tool

    require_tool("nix")
    # The last update booted another kernel for pool cp (the other boot files unknown: all differ).
    boot = {"cp": {"kernel": "/nix/store/x-standin-linux-6.11.9/bzImage"}}
    (tmp_path / "outputs.json").write_text(json.dumps({"boot": boot}))
    assert main(["plan", "--stack", "local", "--outputs", str(tmp_path / "outputs.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[out.index("reboots:") + 1:] == ["  pool cp: kernel, initrd, modules, params change; cp-0 (wave 0) reboot"]


def holds_a_secure_value(node) -> bool:
    """Whether a stack file's config holds a Pulumi secret (`{secure: ...}`) anywhere."""
    if isinstance(node, dict):
        return set(node) == {"secure"} or any(holds_a_secure_value(v) for v in node.values())
    return isinstance(node, list) and any(holds_a_secure_value(v) for v in node)


@pytest.mark.parametrize("path", sorted((ROOT / "stacks").glob("Pulumi.*.yaml")), ids=lambda p: p.name)
def test_no_committed_stack_file_is_locked_to_a_passphrase_it_does_not_need(path):
    """`encryptionsalt` ties a stack file to the passphrase that made it (`pulumi stack init` with
    another one fails: "incorrect passphrase"). A file that holds no secret must not carry one."""
    import yaml

    document = yaml.safe_load(path.read_text()) or {}
    if "encryptionsalt" in document or "encryptedkey" in document:
        assert holds_a_secure_value(document.get("config")), f"{path.name} has an encryption salt but no secret"
