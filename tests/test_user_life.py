"""Tier 2: a user's whole life with a stack they wrote, generated (tests/stackgen.py).

For every generated stack, with its signing key stored as the README says (`secure:`):
the offline commands read the stack file without decoding the secret; the program's first
update runs under mocks; the second reads the first's exports as the engine answers
`readStackOutputs` (secret outputs as secrets) and changes no Command's inputs (an unchanged
`pulumi up` runs nothing on any host), nor does the third; a change (a label on one pool)
changes only that pool's Commands; then every command of the CLI runs on those outputs as
`pulumi stack output --json` prints them, on `{}` (before the first update), on a missing file
and on a garbled one: each exits with a documented code and never prints a traceback.

Hosts are never reached: `ssh` on PATH is a stub that refuses every connection (the generated
addresses are documentation and private ranges), and AWS credentials are off (no request leaves).
CI runs FLAKEFLEET_GENERATED_STACKS examples (default 50); `make test-deep` runs 300. Cases hypothesis
once shrank to, and the two stacks of issue 35, stay as table cases (`KEPT`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from flakefleet.__main__ import main as flakefleet
from flakefleet.common.cli import INTERNAL
from flakefleet.config import parse_stack_config
from flakefleet.config import stackfile
from flakefleet.config.stackfile import Secure, read_stack_file
from flakefleet.plan.inventory import plan_inventory
from tests import stackgen
from tests.harness import FleetMocks, RecordingMonitor, run_program

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("FLAKEFLEET_GENERATED_STACKS", "50"))
COMMAND = "command:local:Command"
# What each command may exit with (flakefleet/common/cli.py): 0 done, 1 error, 2 differs, 3 could not ask.
CODES = {"plan": {0, 1}, "status": {0, 1, 2, 3}, "drift": {0, 1, 2, 3}, "rollback": {1}, "remove": {1},
         "dr": {1}, "configurations": {2}}

KEPT = [
    # Issue 35's AWS stack: three control planes, workers, a GPU pool and an autoscaled pool.
    {"aws:region": "eu-west-1", "flakefleet:cluster": {"name": "ff-team"},
     "flakefleet:network": {"vpc_cidr": "10.20.0.0/16", "az_count": 3, "admin_cidrs": ["10.200.0.0/16"]},
     "flakefleet:pools": [
         {"name": "cp", "role": "control-plane", "instance_type": "t3.large", "count": 3},
         {"name": "workers", "role": "worker", "instance_type": "t3.large", "count": 2},
         {"name": "gpu", "role": "worker", "instance_type": "g5.xlarge", "count": 1, "gpu": "nvidia"},
         {"name": "spot", "role": "worker", "instance_type": "t3.large", "autoscaling": {"min": 0, "max": 10}}],
     "flakefleet:delivery": {"authorized_keys": [stackgen.DEPLOY_KEY]}},
    # Issue 35's on-prem stack: three servers installed with nixos-anywhere.
    {"flakefleet:cluster": {"name": "ff-onprem"}, "flakefleet:storage": {"enabled": False},
     "flakefleet:pools": [{"name": "cp", "role": "control-plane", "provider": "metal", "bootstrap": "nixos-anywhere",
                           "hosts": [{"name": f"cp-{k}", "address": f"192.0.2.{10 + k}",
                                      "install_host_key": stackgen.HOST_KEYS[k]} for k in range(3)]}],
     "flakefleet:delivery": {"authorized_keys": [stackgen.DEPLOY_KEY]}},
]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No host, no cloud: `ssh` refuses every connection, AWS has no credentials and no metadata
    service, and the Pulumi CLI is not on PATH."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    ssh = stubs / "ssh"
    ssh.write_text("#!/bin/sh\necho \"ssh: connect to host (test stub) port 22: Connection refused\" >&2\nexit 255\n")
    ssh.chmod(0o755)
    nix = shutil.which("nix")
    path = [str(stubs)] + ([str(Path(nix).parent)] if nix else []) + ["/usr/bin", "/bin"]
    monkeypatch.setenv("PATH", os.pathsep.join(dict.fromkeys(p for p in path if "pulumi" not in p)))
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return tmp_path


def cli(argv: list[str]) -> tuple[int, str, str]:
    """`flakefleet ARGV` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = flakefleet(argv)
    return code, out.getvalue(), err.getvalue()


def command_inputs(run) -> dict[str, tuple]:
    """Every Command's inputs and where they hold secrets: what decides whether `pulumi up` runs it."""
    return {r.urn: (json.dumps(r.inputs, sort_keys=True, default=str), sorted(r.secret_paths))
            for r in run.of_type(COMMAND)}


def as_cli_prints(run) -> dict:
    """The exports as `pulumi stack output --json` prints them: secret outputs as "[secret]"."""
    return json.loads(json.dumps({k: "[secret]" if k in run.secret_exports else v for k, v in run.exports.items()},
                                 default=str))


def write_stack(tmp: Path, config: dict) -> Path:
    stacks = tmp / "stacks"
    shutil.copytree(ROOT / "stacks", stacks)  # configurations reads every stack (and the feature matrix's bases)
    (stacks / "Pulumi.gen.yaml").write_text(stackgen.stack_file(config))
    return stacks


def state_files(tmp: Path, outputs: dict) -> dict[str, Path]:
    files = {"outputs": tmp / "outputs.json", "empty": tmp / "empty.json", "garbled": tmp / "garbled.json",
             "missing": tmp / "missing.json", "list": tmp / "list.json"}
    files["outputs"].write_text(json.dumps(outputs))
    files["empty"].write_text("{}")
    files["garbled"].write_text('{"nodes": {"cp-0": ')
    files["list"].write_text("[]")
    return files


def commands(stacks: Path, files: dict[str, Path], ec2: bool) -> list[list[str]]:
    """Every command a user runs on a stack and its state (none that would reach a host for long)."""
    at = ["--stack", "gen", "--stacks-dir", str(stacks)]
    argvs = [["plan", *at], ["plan", *at, "--json"], ["configurations", "--check", "--stacks-dir", str(stacks)],
             ["remove", *at, "--host", "cp-0"], ["status", "--stack", "gen"], ["drift", "--stack", "gen"]]
    for name, path in files.items():
        state = ["--outputs", str(path)]
        argvs += [["plan", *at, *state], ["status", *state], ["status", *state, "--json"], ["drift", *state],
                  ["drift", *state, "--json"], ["rollback", *at, "--host", "nosuch", *state],
                  ["dr", "list", *at, *state], ["dr", "list", *at, *state, "--json"]]
        if name in ("garbled", "missing", "list") or (name == "empty" and ec2):  # fails before any host is asked
            argvs.append(["rollback", *at, "--pool", "cp", *state])
        if name in ("garbled", "missing", "list") and ec2:
            argvs.append(["remove", *at, "--host", "cp-0", "--force", *state])
    return argvs


def a_change(plain: dict, secret_keys: list[str], last, cfg) -> None:
    """A label added to one pool with hosts, as the next update after `last`: it runs, and only
    that pool's Commands change (its hosts' deliveries and installs, its publish step, and the
    kubeconfig when the first server is one of them): a change that concerns other hosts runs
    nothing on them."""
    pools = json.loads(plain["flakefleet:pools"]) if isinstance(plain["flakefleet:pools"], str) else plain["flakefleet:pools"]
    target = next(p for p in reversed(pools) if p.get("count") or p.get("hosts") or p.get("hosts_file"))
    target["labels"] = {**target.get("labels", {}), "changed": "yes"}
    changed = run_program({**plain, "flakefleet:pools": json.dumps(pools)}, stack="gen", secret_keys=secret_keys,
                          monitor=RecordingMonitor(FleetMocks(previous_outputs=last.exports,
                                                              previous_secrets=last.secret_exports)))
    before, after = command_inputs(last), command_inputs(changed)
    assert before.keys() == after.keys()
    hosts = {h.name for h in plan_inventory(cfg).hosts if h.pool == target["name"]}
    moved = {urn.rsplit("::", 1)[1] for urn in before if before[urn] != after[urn]}
    mine = {f"{cfg.cluster.name}-{step}-{h}" for h in hosts for step in ("deliver", "install")}  # its hosts (an install only records)
    mine |= {f"{cfg.cluster.name}-publish-{target['name']}"}
    if plan_inventory(cfg).control_planes[0].name in hosts:  # the kubeconfig is read again from the first server
        mine.add(f"{cfg.cluster.name}-kubeconfig")
    assert moved and moved <= mine, sorted(moved - mine)


def joins_and_leaves(plain: dict, secret_keys: list[str], last, cfg, stacks: Path) -> None:
    """A worker leaving, then one joining, each as the next update after `last`: the Commands of
    every other host keep their inputs (their batches are kept; their firewalls admit ranges, and
    a leaving host until the update after its drain), except the leaving host's batchmates (their
    plans name their batch, an install's holds its delivery plan: the runners see only that
    changed and run nothing on the host), and, where metal pools name no `networks`, the metal
    hosts whose firewalls admit each host by its address: when a host joins, and in the update
    after one left (it was drained at the end of the one before)."""
    pools = json.loads(plain["flakefleet:pools"]) if isinstance(plain["flakefleet:pools"], str) else plain["flakefleet:pools"]
    at = next((k for k, p in enumerate(pools) if p["role"] == "worker" and len(hosts_of(p, stacks)) > 1), None)
    if at is None:
        return  # no worker pool a host can leave and the pool stay (its last host's leaving is a change of the cluster)
    hosts = {h.name: h for h in plan_inventory(cfg).hosts}
    exact = {f"{cfg.cluster.name}-{step}-{h}" for h, host in hosts.items() if host.provider == "metal"
             and not cfg.pool(host.pool).networks for step in ("deliver", "install")}

    def update(pools_now, after):
        return run_program({**plain, "flakefleet:pools": json.dumps(pools_now)}, stack="gen", secret_keys=secret_keys,
                           monitor=RecordingMonitor(FleetMocks(previous_outputs=after.exports,
                                                               previous_secrets=after.secret_exports)))

    def moved(before, after) -> tuple[set[str], set[str]]:  # (changed, came or went)
        b, a = command_inputs(before), command_inputs(after)
        return ({u.rsplit("::", 1)[1] for u in b.keys() & a.keys() if b[u] != a[u]},
                {u.rsplit("::", 1)[1] for u in b.keys() ^ a.keys()})

    for change in ("leave", "join"):
        changed, name = with_a_host(pools, at, change, stacks)
        run = update(changed, last)
        changed_now, came_or_went = moved(last, run)
        assert any(u.endswith(f"-{name}") for u in came_or_went), (change, name, sorted(came_or_went))
        batchmates = next((b for b in last.exports.get("batches", []) if name in b), []) if change == "leave" else []
        allowed = {f"{cfg.cluster.name}-{step}-{h}" for h in batchmates for step in ("deliver", "install")}
        allowed |= exact if change == "join" else set()
        assert changed_now <= allowed, (change, sorted(changed_now - allowed))
        if change == "leave":  # the next update: the others stop admitting it (exact addresses only)
            changed_next, _ = moved(run, update(changed, run))
            assert changed_next <= exact, sorted(changed_next - exact)
            if f"{cfg.cluster.name}-deliver-{name}" in exact:  # it was admitted by its address: no more
                assert changed_next, "the others still admit the host that left"
        with_a_host(pools, at, "restore", stacks)


def hosts_of(pool: dict, stacks: Path) -> list[dict]:
    """A pool's hosts, inline or from its hosts_file (an EC2 pool's: one per count)."""
    if pool.get("count"):
        return [{}] * pool["count"]
    if pool.get("hosts_file"):
        return yaml.safe_load((stacks / pool["hosts_file"]).read_text())
    return pool.get("hosts", [])


def with_a_host(pools: list[dict], at: int, change: str, stacks: Path) -> tuple[list[dict], str]:
    """`pools` with pool `at`'s first host gone (`leave`) or one more (`join`), and that host's
    name; a hosts_file is rewritten in place (`restore` puts it back)."""
    pool = json.loads(json.dumps(pools[at]))
    if pool.get("count"):
        pool["count"] += 1 if change == "join" else -1 if change == "leave" else 0
        name = f"{pool['name']}-{pool['count'] - 1 if change == 'join' else pool['count']}"
    else:
        path = stacks / pool["hosts_file"] if pool.get("hosts_file") else None
        original = path.with_suffix(".orig") if path else None
        if path and change == "restore":
            original.replace(path)
            return pools, ""
        if path and not original.exists():
            shutil.copy(path, original)
        hosts = hosts_of(pool, stacks)
        if change == "leave":
            name, hosts = hosts[0]["name"], hosts[1:]
        else:
            name = "joiner"
            joiner = {**{k: v for k, v in hosts[0].items() if k != "name"}, "name": name, "address": "192.0.2.250"}
            if "network" in joiner:  # its own interface and address, as a user writes a new machine's
                joiner["network"] = {**joiner["network"], "mac": "0c:c4:7a:00:00:fa", "addresses": ["192.0.2.250/32"]}
            hosts = [*hosts, joiner]
        if path:
            path.write_text(yaml.safe_dump(hosts))
        else:
            pool["hosts"] = hosts
    return [*pools[:at], pool, *pools[at + 1:]], name


def live(config: dict, tmp: Path, files: dict[str, str] | None = None) -> None:
    """One stack's life: files, offline read, first, second and third update, a change, every
    command. `files` (path under stacks/ -> text) go beside the stack file: a pool's hosts_file."""
    config = {**config, "flakefleet:signing_key": config.get("flakefleet:signing_key") or stackgen.encrypt(stackgen.SIGNING_KEY)}
    stacks = write_stack(tmp, config)
    for relative, text in (files or {}).items():
        (stacks / relative).parent.mkdir(parents=True, exist_ok=True)
        (stacks / relative).write_text(text)
    # The program reads a hosts_file from the project's stacks/ (its working directory's): here, this copy.
    with mock.patch.object(stackfile, "STACKS", stacks):
        _live(config, tmp, stacks)


def _live(config: dict, tmp: Path, stacks: Path) -> None:
    raw = read_stack_file("gen", stacks)
    assert isinstance(raw["flakefleet:signing_key"], Secure)  # read, never decoded
    cfg = parse_stack_config(raw, raw.get("aws:region"))
    assert cfg.signing_key is None and cfg.signing_public_key is None

    plain, secret_keys = stackgen.decrypt(raw)
    first = run_program(plain, stack="gen", secret_keys=secret_keys)

    def update_after(last):  # an update reading the last one's exports as the engine answers
        return run_program(plain, stack="gen", secret_keys=secret_keys, monitor=RecordingMonitor(
            FleetMocks(previous_outputs=last.exports, previous_secrets=last.secret_exports)))

    second = update_after(first)
    third = update_after(second)
    assert command_inputs(second) == command_inputs(first), "the second update would run Commands again"
    assert command_inputs(third) == command_inputs(second), "an unchanged update would run Commands again"
    a_change(plain, secret_keys, third, cfg)
    joins_and_leaves(plain, secret_keys, third, cfg, stacks)

    files = state_files(tmp, as_cli_prints(first))
    for argv in commands(stacks, files, cfg.uses_ec2):
        code, out, err = cli(argv)
        said = f"flakefleet {' '.join(argv)} -> {code}\n{out[-2000:]}\n{err[-2000:]}"
        assert "Traceback" not in out + err and INTERNAL not in err, said
        assert code in CODES[argv[0]], said
        if code == 1:  # an error is said, one line a problem, naming the command
            assert err.strip() and all(line.startswith(("flakefleet", "usage:", " ")) for line in err.splitlines()), said


@pytest.mark.parametrize("config", KEPT, ids=["issue35-aws", "issue35-onprem"])
def test_the_stacks_of_issue_35_live_their_whole_life(config, offline):
    live(config, offline)


def test_a_fleet_whose_hosts_are_in_a_file_lives_its_whole_life(offline):
    """Issue 38: bring-your-own workers listed in stacks/inventory/, the stack file naming the file."""
    workers = [{"name": f"w-{k}", "address": f"192.0.2.{20 + k}", "ssh_host_key": stackgen.HOST_KEYS[k]} for k in range(3)]
    config = {"flakefleet:cluster": {"name": "ff-files"}, "flakefleet:storage": {"enabled": False},
              "flakefleet:pools": [
                  {"name": "cp", "role": "control-plane", "provider": "metal",
                   "hosts": [{"name": "cp-0", "address": "192.0.2.10", "ssh_host_key": stackgen.HOST_KEYS[0]}]},
                  {"name": "workers", "role": "worker", "provider": "metal", "hosts_file": "inventory/gen-workers.yaml"}],
              "flakefleet:delivery": {"authorized_keys": [stackgen.DEPLOY_KEY]}}
    live(config, offline, {"inventory/gen-workers.yaml": yaml.safe_dump(workers)})


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=stackgen.user_stacks)
def test_every_generated_stack_lives_its_whole_life(config, offline):
    live(config, Path(tempfile.mkdtemp(dir=offline, prefix="case-")))
