"""Tier 2: the delivery graph under Pulumi mocks: order, triggers, secrets, idempotence, host keys."""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import replace

import pulumi
import pytest

from components.delivery import CREATE, DELETE, UPDATE
from flakefleet.plan.contract import PUBLISH_ENV
from flakefleet.plan.contract import INSTANCE_ENV, PLAN_ENV, SIGNING_KEY_ENV, DeliveryPlan
from flakefleet.plan.specs import files_hash
from flakefleet.preview.manifest import Manifest
from tests.conftest import require_tool
from tests.harness import (
    SIGNING_KEY,
    TEST_SIGNING_KEY,
    FleetMocks,
    ProgramRun,
    RecordingMonitor,
    Registration,
    reaches,
    read_stack_file,
    run_program,
    run_stack,
    stack_names,
)

COMMAND = "command:local:Command"


@pytest.fixture(autouse=True)
def nix_present():
    require_tool("nix")


def commands(run: ProgramRun) -> dict[str, object]:
    """Host name -> its delivery Command registration."""
    return {r.name.split("-deliver-", 1)[1]: r for r in run.of_type(COMMAND) if PLAN_ENV in r.inputs.get("environment", {})}


def plan(reg) -> DeliveryPlan:
    return DeliveryPlan.from_json(reg.inputs["environment"][PLAN_ENV])


@pytest.mark.parametrize("stack", stack_names())
def test_one_delivery_per_host(stack):
    run = run_stack(stack)
    cmds = commands(run)
    assert set(cmds) == set(run.exports["nodes"])
    for reg in cmds.values():
        assert reg.parent.split("::")[2].endswith("flakefleet:index:Delivery")
        assert reg.inputs["create"] == "./scripts/flakefleet deliver"  # relative: the same on every deployer


def test_control_planes_one_at_a_time_then_worker_batches():
    run = run_stack("prod")  # 3 control planes, 9 workers, max_parallel 2
    urn = {name: reg.urn for name, reg in commands(run).items()}
    after = lambda a, b: reaches(run, urn[a], urn[b])  # noqa: E731  (a waits for b)
    assert after("cp-1", "cp-0") and after("cp-2", "cp-1") and not after("cp-0", "cp-1")
    workers = [n for n in run.exports["nodes"] if run.exports["nodes"][n]["role"] == "worker"]
    waves = [workers[i : i + 2] for i in range(0, len(workers), 2)]
    for w in waves[0]:
        assert after(w, "cp-2")
    for previous, wave in zip(waves, waves[1:]):
        for w in wave:
            assert all(after(w, p) for p in previous), w
            assert not any(after(w, other) for other in wave if other != w)  # a batch runs in parallel


def test_three_resources_per_ec2_host_and_none_per_wave():
    """Per EC2 host: its host key, its instance, its delivery (a control plane behind the API load
    balancer also its target attachment); per bring-your-own host only the delivery; nothing per
    wave (the rollout order is plain dependencies between deliveries)."""
    for stack in ("prod", "staging"):
        run = run_stack(stack)
        hosts = run.exports["nodes"]
        per_host = Counter(
            next((h for h in hosts if r.name.endswith(f"-{h}") or r.name.endswith(f"-{h}-host-key")), None)
            for r in run.resources
        )
        per_host.pop(None)
        for r in run.of_type("aws:lb/targetGroupAttachment:TargetGroupAttachment"):
            per_host[r.name.rsplit("-api-", 1)[1]] -= 1
        for host, count in per_host.items():
            assert count == (3 if hosts[host]["instance_id"] else 1), (stack, host)
        assert not [r for r in run.of_type(COMMAND) if "-wave-" in r.name]


def test_no_component_around_an_instance_and_an_alias_to_the_old_one():
    run = run_stack("staging")
    assert not run.of_type("flakefleet:index:Machine")
    for reg in run.of_type("aws:ec2/instance:Instance"):
        assert reg.parent.endswith("flakefleet:index:Machines::ff-staging")  # under Machines, no component
        # Existing stacks keep their instances: the old parent was a Machine component of that name.
        old_parent = reg.parent.rsplit("::", 1)[0] + "$flakefleet:index:Machine::" + reg.name
        assert reg.options["aliases"] == [old_parent], reg.name


def instance(run: ProgramRun, host: str):
    return next(r for r in run.of_type("aws:ec2/instance:Instance") if r.name.endswith(f"-{host}"))


def test_machines_roll_with_the_waves():
    """Control planes that exist wait for the previous control plane's healthy delivery, so
    replacing or restarting instances keeps etcd quorum; workers wait for the last one. Control
    planes that do not exist yet (the first update) are made before the first wave: nothing of
    theirs can be disrupted, and every control plane's plan can name them from the start."""
    first = run_stack("staging")  # 3 control planes, 3 workers, max_parallel 3
    second = run_program(read_stack_file("staging"), stack="staging", monitor=RecordingMonitor(
        FleetMocks(previous_outputs=first.exports, previous_secrets=first.secret_exports)))
    for run in (first, second):
        cmds = commands(run)
        for host, reg in cmds.items():
            assert instance(run, host).urn in reg.dependencies  # delivered after its machine exists
            assert instance(run, host).options["delete_before_replace"] is True  # fixed private address
        assert not reaches(run, instance(run, "cp-0").urn, cmds["cp-0"].urn)
        for w in ("workers-0", "workers-1", "workers-2"):
            assert reaches(run, instance(run, w).urn, cmds["cp-2"].urn)
    cmds = commands(first)
    assert not reaches(first, instance(first, "cp-1").urn, cmds["cp-0"].urn)
    assert not reaches(first, instance(first, "cp-2").urn, cmds["cp-0"].urn)
    key = {r.name.split("ff-staging-", 1)[1].removesuffix("-host-key"): r.urn
           for r in first.of_type(COMMAND) if r.name.endswith("-host-key")}
    assert reaches(first, cmds["cp-0"].urn, key["cp-2"])  # the first server's plan names every control plane
    cmds = commands(second)
    assert reaches(second, instance(second, "cp-1").urn, cmds["cp-0"].urn)
    assert reaches(second, instance(second, "cp-2").urn, cmds["cp-1"].urn)


def test_joining_hosts_wait_for_the_api_load_balancer():
    run = run_stack("staging")
    listener = run.of_type("aws:lb/listener:Listener")[0]
    cmds = commands(run)
    assert not reaches(run, cmds["cp-0"].urn, listener.urn)  # the first server needs nobody
    for host in ("cp-1", "cp-2", "workers-0"):
        assert reaches(run, cmds[host].urn, listener.urn)


def test_a_replaced_instance_is_delivered_again():
    run = run_stack("staging")
    for host, reg in commands(run).items():
        # A new instance id is an update the runner delivers on (it changed what the host is).
        assert reg.inputs["environment"][INSTANCE_ENV] == f"i-{abs(hash('ff-staging-' + host)) % 16**12:012x}"


@pytest.mark.parametrize("stack", stack_names())
def test_no_triggers_every_change_is_an_update_the_runner_decides(stack):
    """A replacement deletes the old Command, and a delivery Command's delete is its host's
    removal: so nothing replaces it. create delivers; update delivers only when the system,
    files, host key or instance changed (else records); delete drains a host leaving the stack."""
    run = run_stack(stack)
    for name, reg in commands(run).items():
        assert "triggers" not in reg.inputs
        assert (reg.inputs["create"], reg.inputs["update"], reg.inputs["delete"]) == (CREATE, UPDATE, DELETE)
        assert plan(reg).system == run.exports["nodes"][name]["wanted"] == run.exports["nodes"][name]["system"]
        assert plan(reg).host_key.startswith("ssh-ed25519 ")
        assert (reg.inputs["environment"][INSTANCE_ENV] != "") == bool(run.exports["nodes"][name]["instance_id"])
    assert all(p["off_wanted"] == {} for p in run.exports["pools"].values())


def test_secrets_only_in_the_secret_environment():
    run = run_stack("local")
    for reg in commands(run).values():
        assert "environment" in reg.secret_inputs
        assert reg.inputs["environment"][SIGNING_KEY_ENV] == TEST_SIGNING_KEY
        everything_else = json.dumps({k: v for k, v in reg.inputs.items() if k != "environment"})
        assert TEST_SIGNING_KEY not in everything_else
        assert TEST_SIGNING_KEY not in reg.inputs["environment"][PLAN_ENV]


def test_plans_carry_facts_and_pinned_keys_for_bring_your_own_hosts():
    run = run_stack("local")
    keys = {h["name"]: h["ssh_host_key"] for p in json.loads(read_stack_file("local")["flakefleet:pools"]) for h in p["hosts"]}
    for name, reg in commands(run).items():
        p = plan(reg)
        assert (p.address, p.port, p.user) == (run.exports["nodes"][name]["address"], 2222, "root")
        assert p.host_key == keys[name]
        facts = json.loads(next(f.content for f in p.files if f.path == "/etc/flakefleet/host.json"))
        assert facts["name"] == name and facts["init"] == (name == "cp-0")
        assert p.boot_timeout_s == 600


def test_metal_pools_wait_longer_for_boot():
    run = run_stack("prod")
    timeouts = {plan(reg).boot_timeout_s for name, reg in commands(run).items() if name.startswith("metal-")}
    assert timeouts == {1800}


def test_unchanged_config_gives_identical_delivery_inputs():
    first = {n: r.inputs for n, r in commands(run_stack("staging")).items()}
    second = {n: r.inputs for n, r in commands(run_stack("staging")).items()}
    assert first == second  # so the engine sees no change and runs no command


def delivered_inputs(reg) -> tuple:
    """What reaches the host: the runner's update compares exactly these (flakefleet.delivery.runner.needs_delivery)."""
    p = plan(reg)
    return p.system, files_hash(p.files), p.host_key, reg.inputs["environment"][INSTANCE_ENV]


def test_a_changed_pool_changes_only_what_its_hosts_are_given():
    before = {n: delivered_inputs(r) for n, r in commands(run_stack("staging")).items()}
    config = read_stack_file("staging")
    pools = json.loads(config["flakefleet:pools"])
    pools[1]["labels"] = {"tier": "batch"}
    config["flakefleet:pools"] = json.dumps(pools)
    after = {n: delivered_inputs(r) for n, r in commands(run_program(config, stack="staging")).items()}
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {"workers-0", "workers-1", "workers-2"}


PRIVATE_KEY_MARKERS = ("PRIVATE KEY", "b3BlbnNzaC1rZXktdjE")  # PEM/OpenSSH armour; base64 of "openssh-key-v1"


@pytest.mark.parametrize("stack", stack_names())
def test_no_user_data_holds_private_key_material(stack):
    """User data stays readable (DescribeInstanceAttribute, the metadata service): it carries the
    deploy keys and the signing key's public half only, in plain inputs, and no host key is made
    by the stack."""
    run = run_stack(stack)
    assert [k.name for k in run.of_type("tls:index/privateKey:PrivateKey") if k.name.endswith("-host-key")] == []
    for instance in run.of_type("aws:ec2/instance:Instance"):
        data = instance.inputs["userData"]
        assert data.startswith("#!/bin/sh") and "userData" not in instance.secret_inputs
        assert not any(marker in data for marker in PRIVATE_KEY_MARKERS), instance.name
        assert "ssh_host_" not in data  # the host makes its own key
        assert "userData" in instance.options["ignore_changes"]


def test_ec2_host_keys_are_read_off_each_hosts_console_and_pinned_by_every_plan():
    run = run_stack("staging")
    keys = {r.name.split("ff-staging-", 1)[1].rsplit("-host-key", 1)[0]: r
            for r in run.of_type(COMMAND) if r.name.endswith("-host-key")}
    assert set(keys) == set(commands(run))
    for name, reg in commands(run).items():
        key = keys[name]
        made = instance(run, name)
        assert key.inputs["create"] == "./scripts/flakefleet host-key" and made.urn in key.dependencies
        target = json.loads(key.inputs["environment"]["FLAKEFLEET_HOST_KEY_TARGET"])
        assert target == {"host": name, "address": made.inputs["privateIp"], "port": 22, "region": "eu-west-1"}
        assert key.inputs["update"] == key.inputs["create"]  # checks the verified key again, no console
        assert key.inputs["environment"][INSTANCE_ENV] == key.inputs["triggers"][0]  # a new instance, a new key
        # What the console check printed (the mocks answer as `flakefleet host-key` does).
        assert plan(reg).host_key == f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{key.name[:-9][-20:]:A>43}"
        assert key.urn in reg.dependencies


@pytest.mark.parametrize(
    ("stack", "signing_key", "secret_keys", "message"),
    [
        ("staging", None, [SIGNING_KEY],
         "flakefleet:signing_key: required; hosts accept only signed systems. Create it: nix --extra-experimental-features nix-command key"),
        # The demo's hosts trust the demo's key only: a new key in the committed file would not do.
        ("local", None, [SIGNING_KEY], "flakefleet:signing_key: required; hosts accept only signed systems. For the "
         "local demo, use the key `make demo` set: `source .demo/env.sh` and pass `--config-file .demo/Pulumi.local.yaml`"),
        ("local", "oops", [SIGNING_KEY], "flakefleet:signing_key: not a Nix secret key"),
        ("local", TEST_SIGNING_KEY, [], "flakefleet:signing_key: must be a Pulumi secret, not plain config"),
    ],
    ids=["missing", "missing-on-the-demo-stack", "malformed", "plain"],
)
def test_signing_key_problems_stop_before_any_resource(stack, signing_key, secret_keys, message):
    config = read_stack_file(stack)
    if signing_key is not None:
        config[SIGNING_KEY] = signing_key
    monitor = RecordingMonitor(FleetMocks())
    with pytest.raises(pulumi.RunError) as err:
        run_program(config, stack=stack, monitor=monitor, secret_keys=secret_keys)
    assert message in str(err.value)
    assert "oops" not in str(err.value) and TEST_SIGNING_KEY not in str(err.value)  # never echo a secret
    assert monitor.records == []


def test_hosts_trust_the_public_half_of_the_signing_key():
    run = run_stack("local")
    cp = commands(run)["cp-0"]
    system = plan(cp).system
    assert system == run.exports["systems"]["cp"]
    # The spec the system was evaluated from names the public key (never the secret one).
    from flakefleet.config import parse_stack_config
    from flakefleet.plan.inventory import plan_inventory
    from flakefleet.plan.specs import pool_spec

    cfg = parse_stack_config({**read_stack_file("local"), SIGNING_KEY: TEST_SIGNING_KEY}, None, {SIGNING_KEY})
    spec = pool_spec(cfg, plan_inventory(cfg), "cp").as_json()
    assert spec["trustedPublicKeys"] == ["flakefleet-test-1:" + "A" * 43 + "="]
    assert TEST_SIGNING_KEY not in json.dumps(spec)


def test_each_host_waits_for_its_batch_to_be_ready_on_the_control_planes():
    run = run_stack("prod")  # max_parallel 2
    plans = {name: plan(reg) for name, reg in commands(run).items()}
    assert plans["cp-0"].batch == ("cp-0",) and [e.host for e in plans["cp-0"].ready_via] == ["cp-0"]
    assert [e.host for e in plans["cp-2"].ready_via] == ["cp-0", "cp-1", "cp-2"]
    worker = next(n for n in plans if not n.startswith("cp-"))
    assert len(plans[worker].batch) == 2 and worker in plans[worker].batch
    assert [e.host for e in plans[worker].ready_via] == ["cp-0", "cp-1", "cp-2"]
    assert all(e.host_key.startswith("ssh-ed25519 ") for e in plans[worker].ready_via)


def test_token_files_by_role():
    run = run_stack("local")
    for name, reg in commands(run).items():
        tokens = {f.path.rsplit("/", 1)[1]: f for f in plan(reg).files if f.path.endswith("-token")}
        expected = {"k3s-agent-token"} | ({"k3s-server-token"} if name.startswith("cp-") else set())
        assert set(tokens) == expected
        for f in tokens.values():
            assert reg.inputs["environment"][f.secret_env].startswith("token-")  # from the mocked RandomPassword
        # Every join presents a secure token; a server's agent token only defines what agents present.
        assert {n: f.k3s_token for n, f in tokens.items()} == (
            {"k3s-server-token": "server", "k3s-agent-token": ""} if name.startswith("cp-") else {"k3s-agent-token": "node"})
    assert len(run.of_type("random:index/randomPassword:RandomPassword")) == 2
    # Each runner carries only the secrets its files name, and the signing key: no worker holds
    # the server token or a CA key, only the first control plane the CAs (issue 38: each secret
    # is encrypted into the state of every Command that carries it).
    for name, reg in commands(run).items():
        named = {f.secret_env for f in plan(reg).files if f.secret_env}
        carried = {k for k in reg.inputs["environment"] if k.startswith("FLAKEFLEET_SECRET_")}
        assert carried == named, name
        assert any("CA" in k for k in carried) == (name == "cp-0"), name
    exported = json.dumps({k: v for k, v in run.exports.items() if k != "k3s_server_token"})
    assert "token-" not in exported  # no token in any other output


def test_server_token_is_exported_only_as_a_secret():
    import pulumi
    from pulumi.runtime.settings import get_root_resource
    from pulumi.runtime.sync_await import _sync_await

    run = run_stack("local")
    assert run.exports["k3s_server_token"].startswith("token-")  # what a rebuild of this cluster needs
    outputs = get_root_resource().outputs
    assert _sync_await(pulumi.Output.from_input(outputs["k3s_server_token"]).is_secret())


def test_kubeconfig_is_a_secret_read_after_the_first_control_plane_is_healthy():
    run = run_stack("staging")
    (fetch,) = [r for r in run.of_type(COMMAND) if r.name.endswith("-kubeconfig")]
    assert "stdout" in fetch.options["additional_secret_outputs"]
    assert commands(run)["cp-0"].urn in fetch.dependencies
    target = json.loads(fetch.inputs["environment"]["FLAKEFLEET_KUBECONFIG"])
    assert (target["endpoint"]["host"], target["api_endpoint"]) == ("cp-0", "https://10.20.0.4:6443")
    assert run.exports["kubeconfig"].startswith("apiVersion: v1")
    assert run.exports["cluster_ca_certificate"] == "STANDIN-CA"


def test_kubeconfig_and_tokens_are_secret_in_the_stack_outputs():
    import pulumi
    from pulumi.runtime.settings import get_root_resource
    from pulumi.runtime.sync_await import _sync_await

    run_stack("local")
    outputs = get_root_resource().outputs
    assert _sync_await(pulumi.Output.from_input(outputs["kubeconfig"]).is_secret())
    assert not _sync_await(pulumi.Output.from_input(outputs["cluster_ca_certificate"]).is_secret())


def test_removing_a_host_drains_it_before_its_machine_goes():
    first = run_stack("staging")
    run = run_program(read_stack_file("staging"), stack="staging",
                      monitor=RecordingMonitor(FleetMocks(previous_outputs=first.exports)))
    for reg in commands(run).values():
        assert reg.inputs["delete"] == "./scripts/flakefleet deliver --remove"
        assert [e.host for e in plan(reg).control_planes] == ["cp-0", "cp-1", "cp-2"]
    # Each Command depends on its host's instance, so Pulumi deletes it (draining) before the instance.
    for host, reg in commands(run).items():
        assert instance(run, host).urn in reg.dependencies


def test_drift_output_reports_what_each_delivery_found():
    run = run_stack("local")
    assert run.exports["drift"] == {n: {"running": "", "outside_flakefleet": False} for n in run.exports["nodes"]}


def test_host_outputs_tolerate_any_stdout():
    from components.delivery import host_outputs

    out = host_outputs('[h] copied 0 paths\n{"found": {"running": "/nix/store/x"}, "system": "/nix/store/s"}', "i-1")
    assert out == {"system": "/nix/store/s", "found": {"running": "/nix/store/x"}, "reboot_pending": False,
                   "instance_id": "i-1", "outcome": None}
    for junk in ("", "not json"):
        assert host_outputs(junk, None) == {"system": None, "found": {}, "reboot_pending": False, "instance_id": None,
                                            "outcome": None}


def test_every_control_plane_is_named_from_the_first_update_and_a_second_changes_no_plan():
    """The first update makes the control planes that do not exist yet before its first wave, so
    cp-0's plan names cp-1 and cp-2 by the keys their consoles showed; every later update names
    them by the keys the last update pinned (its `nodes` output): the same plan. (cp-0's plan
    used to gain them only at the second update, which so changed an unchanged stack's first
    control planes.)"""
    first = run_stack("staging")
    cps = {n: [e.host for e in plan(r).control_planes] for n, r in commands(first).items()}
    assert all(found == ["cp-0", "cp-1", "cp-2"] for found in cps.values()), cps
    assert [e.host for e in plan(commands(first)["cp-1"]).ready_via] == ["cp-0", "cp-1"]  # those delivered before it
    second = run_program(read_stack_file("staging"), stack="staging", monitor=RecordingMonitor(
        FleetMocks(previous_outputs=first.exports, previous_secrets=first.secret_exports)))
    pinned = {n: row["host_key"] for n, row in first.exports["nodes"].items()}
    for name, reg in commands(second).items():
        assert {e.host: e.host_key for e in plan(reg).control_planes} == {c: pinned[c] for c in ("cp-0", "cp-1", "cp-2")}
    assert {n: r.inputs for n, r in commands(second).items()} == {n: r.inputs for n, r in commands(first).items()}


def test_a_hosts_delivery_depends_on_its_own_and_the_control_planes_keys_only():
    """Not on every host's key: that made registration quadratic in fleet size."""
    run = run_stack("staging")
    keys = {r.name.rsplit("-host-key", 1)[0].split("ff-staging-", 1)[1]: r.urn
            for r in run.of_type(COMMAND) if r.name.endswith("-host-key")}
    deps = set(commands(run)["workers-2"].dependencies)
    assert {keys["workers-2"], keys["cp-0"], keys["cp-1"], keys["cp-2"]} <= deps
    assert keys["workers-0"] not in deps and keys["workers-1"] not in deps


def test_the_update_after_the_first_turns_no_command_input_secret():
    """The program reads its own last outputs, secrets included (the engine answers
    readStackOutputs with them as secrets). What it derives from them (pinned host keys, the
    upgrade snapshot) is public: were it secret, every Command it feeds would change from plain
    to secret at the second update, and an unchanged `pulumi up` would run every delivery (found
    with the real engine: an unchanged preview updated each delivery and replaced the kubeconfig)."""
    from tests.harness import FleetMocks, RecordingMonitor

    first = run_stack("local")
    assert "kubeconfig" in first.secret_exports, sorted(first.secret_exports)  # so the answer holds secrets
    second = run_program(read_stack_file("local"), stack="local", monitor=RecordingMonitor(
        FleetMocks(previous_outputs=first.exports, previous_secrets=first.secret_exports)))
    before = {r.urn: r.secret_paths for r in first.of_type(COMMAND)}
    after = {r.urn: r.secret_paths for r in second.of_type(COMMAND)}
    assert after == before
    assert f"environment.{PLAN_ENV}" not in after[commands(first)["cp-0"].urn]  # the delivery plan itself is plain


def test_preview_names_the_hosts_that_reboot_for_a_new_kernel():
    """The program reads its own last `boot` output (the builtin invoke readStackOutputs, as on the
    real engine) and logs one line per pool whose boot files change, naming hosts and waves."""
    from tests.harness import FleetMocks, RecordingMonitor

    first = run_stack("local")
    previous = {key: {**boot, "kernel": boot["kernel"].replace("6.12.0", "6.11.9")} for key, boot in first.exports["boot"].items()}
    logged: list[str] = []
    original = pulumi.log.info
    pulumi.log.info = lambda message, *a, **k: logged.append(message)
    try:
        run_program(read_stack_file("local"), stack="local", preview=True,
                    monitor=RecordingMonitor(FleetMocks(previous_outputs={"boot": previous})))
    finally:
        pulumi.log.info = original
    notes = [m for m in logged if m.startswith("pool ")]
    assert notes == ["pool cp: kernel change; cp-0 (wave 0) reboot",
                     "pool workers: kernel change; worker-0 (wave 1), worker-1 (wave 1) reboot"]
    assert first.exports["boot"]["workers"]["kernel"].endswith("-linux-6.12.0/bzImage")


def preview_notes(previous: dict) -> list[str]:
    """The `pool ...` diagnostics of a preview of the local stack after an update that exported `previous`."""
    from tests.harness import FleetMocks, RecordingMonitor

    logged: list[str] = []
    original = pulumi.log.info
    pulumi.log.info = lambda message, *a, **k: logged.append(message)
    try:
        run_program(read_stack_file("local"), stack="local", preview=True,
                    monitor=RecordingMonitor(FleetMocks(previous_outputs=previous)))
    finally:
        pulumi.log.info = original
    return [m for m in logged if m.startswith("pool ")]


def test_preview_says_once_per_pool_what_changes_since_the_last_update():
    """Against the manifests the last update exported: the package and unit changes, the reboot,
    the hosts and their waves, in one diagnostic per pool (not one per host)."""
    first = run_stack("local")
    then = {key: Manifest.unpack(packed) for key, packed in first.exports["system_manifests"].items()}
    old = then["workers"]
    then["workers"] = Manifest(
        system="0ld", packages={**old.packages, "k3s": {"1.31.1+k3s1": "0ld"}},
        units={**old.units, "k3s.service": ("0ld", "restart")},
        boot={**old.boot, "kernel": old.boot["kernel"].replace("6.12.0", "6.11.9")}, derivations=old.derivations)
    notes = preview_notes({"system_manifests": {k: m.pack() for k, m in then.items()}, "nodes": first.exports["nodes"],
                           "boot": first.exports["boot"]})
    assert notes == ["\n".join([
        "pool workers: changes on worker-0 (wave 1), worker-1 (wave 1)",
        "  packages (1):", "    k3s: 1.31.1+k3s1 → 1.31.2+k3s1",
        "  services: k3s.service restarts",
        "  reboot: kernel 6.11.9 → 6.12.0; kernel change: the hosts reboot"])]


def test_preview_names_a_workload_the_stack_no_longer_runs_as_pruned():
    """The last update's control planes linked a workload's manifest that this stack's do not (its
    `links`, from the flake's lib.k3sLinks): the preview says the cluster loses it."""
    first = run_stack("local")
    then = {key: Manifest.unpack(packed) for key, packed in first.exports["system_manifests"].items()}
    now = then["cp"].links
    assert now is not None and set(now) == {"manifests", "images"}
    then["cp"] = replace(then["cp"], system="0ld", links={**now, "manifests": (*now["manifests"], "workload-retired.yaml")})
    notes = preview_notes({"system_manifests": {k: m.pack() for k, m in then.items()}, "nodes": first.exports["nodes"],
                           "boot": first.exports["boot"]})
    assert notes == ["\n".join([
        "pool cp: changes on cp-0 (wave 0)",
        "  cluster: prunes workload-retired.yaml (its objects deleted after the switch: k3s never deletes them)"])]


def test_preview_of_an_unchanged_stack_says_nothing_per_pool():
    first = run_stack("local")
    assert preview_notes({k: first.exports[k] for k in ("system_manifests", "nodes", "boot")}) == []
    assert set(first.exports["system_manifests"]) == {"cp", "workers"}
    assert all(len(packed) < 2000 for packed in first.exports["system_manifests"].values())


def publish_steps(run: ProgramRun) -> dict[str, Registration]:
    return {json.loads(r.inputs["environment"][PUBLISH_ENV])["pool"]: r
            for r in run.of_type(COMMAND) if PUBLISH_ENV in r.inputs.get("environment", {})}


def test_each_pool_is_published_once_before_the_first_wave():
    run = run_stack("staging")
    steps = publish_steps(run)
    pools = {n["pool"] for n in run.exports["nodes"].values()}
    assert set(steps) == pools  # one per pool, not per host
    bucket = run.exports["buckets"]["cache"]
    for pool, step in steps.items():
        plan = json.loads(step.inputs["environment"][PUBLISH_ENV])
        assert plan["bucket"] == bucket and plan["builder"] is None and plan["upstreams"] == ["https://cache.nixos.org"]
        assert "environment" in step.secret_inputs  # the signing key rides along as a secret
        assert TEST_SIGNING_KEY.split(":")[1] not in step.inputs["environment"][PUBLISH_ENV]
    first = commands(run)["cp-0"]
    assert all(reaches(run, first.urn, step.urn) for step in steps.values())


def test_ec2_hosts_substitute_from_the_stack_bucket_and_bring_your_own_hosts_get_copies():
    staging = run_stack("staging")
    bucket = staging.exports["buckets"]["cache"]
    for name, reg in commands(staging).items():
        plan = json.loads(reg.inputs["environment"][PLAN_ENV])
        assert plan["substituters"] == [f"s3://{bucket}?region=eu-west-1", "https://cache.nixos.org"], name
        assert plan["build"] == "local"
        # Also in the host's nix.conf (through an include): later fetches, e.g. a rollback, find the cache.
        conf = next(f for f in plan["files"] if f["path"] == "/etc/flakefleet/nix-cache.conf")
        assert conf["content"] == f"extra-substituters = s3://{bucket}?region=eu-west-1\n"
    local = run_stack("local")  # loopback hosts, no cache URL: SSH copies, nothing published
    assert not publish_steps(local)
    for reg in commands(local).values():
        plan = json.loads(reg.inputs["environment"][PLAN_ENV])
        assert plan["substituters"] == [] and all("nix-cache" not in f["path"] for f in plan["files"])


def test_an_aarch64_pool_built_on_target_is_not_published_and_its_hosts_build():
    cfg = read_stack_file("staging")
    pools = json.loads(cfg["flakefleet:pools"])
    pools.append({"name": "arm", "role": "worker", "instance_type": "m7g.large", "arch": "aarch64", "count": 3,
                  "ip_block": 6, "build": "target"})
    run = run_program({**cfg, "flakefleet:pools": json.dumps(pools)}, stack="staging")
    assert "arm" not in publish_steps(run)
    bucket = run.exports["buckets"]["cache"]
    plans = {h: json.loads(commands(run)[h].inputs["environment"][PLAN_ENV]) for h in ("arm-0", "arm-1", "arm-2")}
    assert all(p["build"] == "target" and p["substituters"][0] == f"s3://{bucket}?region=eu-west-1"
               for p in plans.values())
    # Built once for the pool: its first host builds and pushes, the others wait and substitute.
    assert plans["arm-0"]["push"] == {"bucket": bucket, "region": "eu-west-1"} and not plans["arm-0"]["await_build"]
    assert all(plans[h]["await_build"] and plans[h]["push"] is None for h in ("arm-1", "arm-2"))


def test_runner_reports_are_kept_in_state_but_not_logged():
    """The runner writes progress on stderr and its JSON report on stdout: the delivery and
    publish Commands log stderr only, so `pulumi up` prints each report line not at all (it
    printed it twice: as the last progress line and again when the resource was done)."""
    run = run_stack("staging")
    logged = {r.name: r.inputs.get("logging") for r in run.of_type("command:local:Command")
              if "-deliver-" in r.name or "-publish-" in r.name}
    assert logged and set(logged.values()) == {"stderr"}, logged


def test_a_new_instance_type_is_applied_by_the_hosts_delivery_in_its_wave():
    """pulumi-aws would apply a type change by stop and start as the Instance's own step, behind
    the rollout: the Instance ignores it, and the change reaches the pool's delivery Commands
    (their plans), which run one control plane, one batch, at a time."""
    before = {n: plan(r) for n, r in commands(run_stack("staging")).items()}
    config = read_stack_file("staging")
    pools = json.loads(config["flakefleet:pools"])
    pools[0]["instance_type"] = "m7i.xlarge"
    config["flakefleet:pools"] = json.dumps(pools)
    run = run_program(config, stack="staging")
    for instance in run.of_type("aws:ec2/instance:Instance"):
        assert "instanceType" in instance.options["ignore_changes"], instance.name
    after = {n: plan(r) for n, r in commands(run).items()}
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {h for h in after if after[h].host.startswith("cp-")}
    assert {after[h].instance_type for h in changed} == {"m7i.xlarge"}
    assert {p.region for p in after.values()} == {read_stack_file("staging")["aws:region"]}
    assert {before[h].instance_type for h in changed} == {"m7i.large"}


def test_the_stack_makes_the_cluster_cas_and_only_the_first_server_gets_them_where_none_is():
    from components.tokens import ca_hash
    from flakefleet.plan.specs import K3S_CAS, K3S_TLS_DIR

    run = run_stack("staging")
    certs = {r.name: r for r in run.of_type("tls:index/selfSignedCert:SelfSignedCert")}
    assert len(certs) == 5 and all(c.inputs["isCaCertificate"] for c in certs.values())
    keys = [k for k in run.of_type("tls:index/privateKey:PrivateKey") if not k.name.endswith("-host-key")]
    assert {(k.inputs["algorithm"], k.inputs["ecdsaCurve"]) for k in keys} == {("ECDSA", "P256")}
    plans = {n: plan(r) for n, r in commands(run).items()}
    server_ca = next(c for n, c in certs.items() if n.endswith("-server-ca") and "etcd" not in n)
    for name, reg in commands(run).items():
        p = plans[name]
        # The mocks' certificate PEM (tests/harness.py), hashed as k3s hashes a one-certificate bundle.
        body = base64.b64encode(f"test certificate {server_ca.name}".encode()).decode()
        assert p.ca_hash == ca_hash(f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
        ca_paths = {f.path for f in p.files if f.path.startswith(K3S_TLS_DIR)}
        if name == "cp-0":
            assert ca_paths == {f"{K3S_TLS_DIR}/{ca}.{k}" for ca in K3S_CAS for k in ("crt", "key")}
            assert all(f.create_only and f.secret_env for f in p.files if f.path in ca_paths)
            for env in (e for pair in K3S_CAS.values() for e in pair):
                assert "environment" in reg.secret_inputs and env in reg.inputs["environment"]
        else:
            assert ca_paths == set()  # joining servers take the CAs from the cluster's bootstrap data
    assert len({p.ca_hash for p in plans.values()}) == 1
    exported = json.dumps(run.exports)
    assert "EC PRIVATE KEY" not in exported
