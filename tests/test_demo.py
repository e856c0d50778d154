"""Tier 4 (and 5): the README's first command, `make demo`, as a newcomer runs it, and what it
hands over: the environment file, private files, a clean `make demo-down`. Tier 5 (`upstream`,
the real Pulumi engine on PATH) runs the demo's printed next steps verbatim."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.demo import pulumi_tools, running
from tests.conftest import require
from tests.kube.controlplane import binaries
from tests.testhosts import NAMESPACE_FILE, prerequisites

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "scripts" / "demo.py"
# What holds a secret (keys, tokens, the kubeconfig, Pulumi's passphrase and config), or says how to use it.
PRIVATE = ("env.sh", "outputs.json", "tokens.json", "commands.json", "signing.secret", "deploy_ed25519",
           "passphrase", "Pulumi.local.yaml")


def path_without_the_engine() -> str:
    """PATH without a directory holding a Pulumi CLI: the demo then delivers without Pulumi state."""
    return os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "pulumi").exists())


def demo(command: str, demo_dir: Path, path: str, timeout: float = 900, stacks: Path | None = None
         ) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLAKEFLEET_DEMO_DIR": str(demo_dir), "PATH": path,
           **({"FLAKEFLEET_DEMO_STACKS": str(stacks)} if stacks else {})}
    return subprocess.run([sys.executable, str(DEMO), command], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def namespace_processes(demo_dir: Path) -> dict[str, list[str]]:
    """Host -> the command names of every process in its mount namespace."""
    found: dict[str, list[str]] = {}
    for marker in demo_dir.glob(f"*/{NAMESPACE_FILE}"):
        namespace = marker.read_text().strip()
        found[marker.parent.name] = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.readlink(entry / "ns" / "mnt") == namespace:
                    found[marker.parent.name].append((entry / "comm").read_text().strip())
            except OSError:
                pass
    return found


@pytest.fixture
def demo_dir(tmp_path):
    """A demo state directory of the test's own; whatever the test leaves running is stopped."""
    require(not prerequisites(), f"the demo's test hosts need: {', '.join(prerequisites())}")
    require(binaries() is not None, "the Kubernetes binaries the demo's API runs on (scripts/kubernetes.sh)")
    path = tmp_path / "demo"
    yield path
    if path.exists():
        demo("down", path, os.environ["PATH"])


def test_make_demo_brings_the_local_stack_up_and_down_leaves_nothing_behind(demo_dir):
    committed = (ROOT / "stacks" / "Pulumi.local.yaml").read_bytes()
    up = demo("up", demo_dir, path_without_the_engine())
    assert up.returncode == 0, up.stdout + up.stderr
    assert "Traceback" not in up.stderr
    for host in ("cp-0", "worker-0", "worker-1"):
        assert f"{host:9} Ready" in up.stdout and f"{host:9} in sync" in up.stdout
    # The nodes table is the real API's (kubectl with the stack's kubeconfig output), every node Ready.
    table = up.stdout.split("=== kubectl get nodes", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    assert table[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"], table
    assert {row.split()[0]: row.split()[1] for row in table[1:]} == {
        "cp-0": "Ready", "worker-0": "Ready", "worker-1": "Ready"}, table
    assert "control-plane,etcd,master" in next(row for row in table if row.startswith("cp-0"))
    # No Node was there to delete before the first delivery (the stand-in's own API said every asked-for Node existed).
    assert "deleted its stale Node" not in up.stdout
    # What the demo hands over: an environment file to source, private files, a committed stack file untouched.
    assert stat.S_IMODE(demo_dir.stat().st_mode) == 0o700
    for name in PRIVATE:
        if (demo_dir / name).exists():
            assert stat.S_IMODE((demo_dir / name).stat().st_mode) == 0o600, name
    assert {"env.sh", "outputs.json", "tokens.json"} <= {p.name for p in demo_dir.iterdir()}
    assert (ROOT / "stacks" / "Pulumi.local.yaml").read_bytes() == committed
    assert f"source {demo_dir / 'env.sh'}" in up.stdout
    # The next steps as printed: env.sh puts the installed `flakefleet` command on PATH.
    assert f"  - flakefleet drift --outputs {demo_dir / 'outputs.json'}" in up.stdout
    drift = subprocess.run(["sh", "-c", f". {demo_dir / 'env.sh'} && flakefleet drift --outputs "
                            f"{demo_dir / 'outputs.json'}"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert drift.returncode == 0, drift.stdout + drift.stderr
    # `kubectl get nodes` as printed: env.sh names the kubeconfig output and puts kubectl on PATH.
    assert "  - kubectl get nodes" in up.stdout
    nodes = subprocess.run(["sh", "-c", f". {demo_dir / 'env.sh'} && kubectl get nodes -o name"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(demo_dir.parent)})  # kubectl's cache
    assert nodes.returncode == 0 and nodes.stdout.split() == ["node/cp-0", "node/worker-0", "node/worker-1"], nodes
    # Confirmed deliveries disarmed their dead-man switches whole: each host runs its sshd and its k3s
    # (its kubelet toward the API), nothing else.
    processes = namespace_processes(demo_dir)
    assert set(processes) == {"cp-0", "worker-0", "worker-1"}
    assert all(sorted(set(commands)) == ["k3s", "sshd"] for commands in processes.values()), processes
    markers = {name: (demo_dir / name / NAMESPACE_FILE).read_text() for name in processes}
    api = json.loads((demo_dir / "kube" / "pids.json").read_text())
    assert sorted(api) == ["etcd", "kube-apiserver", "kube-controller-manager"]

    down = demo("down", demo_dir, path_without_the_engine())
    assert down.returncode == 0, down.stderr
    assert "stopped the Kubernetes API, cp-0, worker-0, worker-1" in down.stdout
    assert not demo_dir.exists()
    assert not [name for name, pid in api.items() if running(pid)]
    left = [e.name for e in Path("/proc").iterdir() if e.name.isdigit() and _namespace(e) in markers.values()]
    assert left == []


def _namespace(entry: Path) -> str:
    try:
        return os.readlink(entry / "ns" / "mnt")
    except OSError:
        return ""


def test_a_host_taken_out_of_the_stack_file_is_drained_and_no_other_host_is_touched(demo_dir, tmp_path):
    """Without the engine too (issue 38): worker-1 deleted from the stack file, `make demo` again
    runs nothing on cp-0, only records worker-0's new batch, then removes worker-1 as Pulumi
    would, last: drained, k3s stopped, its Node deleted from the real API."""
    import shutil

    import yaml

    stacks = tmp_path / "stacks"
    shutil.copytree(ROOT / "stacks", stacks)
    first = demo("up", demo_dir, path_without_the_engine(), stacks=stacks)
    assert first.returncode == 0, first.stdout + first.stderr
    path = stacks / "Pulumi.local.yaml"
    document = yaml.safe_load(path.read_text())
    workers = next(p for p in document["config"]["flakefleet:pools"] if p["name"] == "workers")
    workers["hosts"] = [h for h in workers["hosts"] if h["name"] != "worker-1"]
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    again = demo("up", demo_dir, path_without_the_engine(), stacks=stacks)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "[cp-0] unchanged: no command" in out and "[worker-0] only bookkeeping changed" in out, out
    assert out.index("--- leaving the stack: worker-1") > out.index("--- wave 1: worker-0"), out
    assert "worker-1 drained, k3s stopped, node deleted (through cp-0)" in out, out
    nodes = subprocess.run(["sh", "-c", f". {demo_dir / 'env.sh'} && kubectl get nodes -o name"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(demo_dir.parent)})
    assert nodes.stdout.split() == ["node/cp-0", "node/worker-0"], nodes
    third = demo("up", demo_dir, path_without_the_engine(), stacks=stacks)  # nothing left to remove
    assert third.returncode == 0 and "leaving the stack" not in third.stdout, third.stdout + third.stderr


@pytest.mark.upstream
def test_the_demos_next_steps_work_verbatim_on_the_real_engine(demo_dir):
    """Tier 5: with the Pulumi CLI, its Python language host and the command and random plugins on
    PATH, `make demo` runs `pulumi up`; the engine commands it prints then work as printed, and an
    unchanged preview shows no change at all."""
    missing = pulumi_tools()  # every plugin the demo's stack uses (tls: the cluster's CAs)
    require(not missing, f"tier 5: the Pulumi engine on PATH: {', '.join(missing)} (docs/operations.md)")
    committed = (ROOT / "stacks" / "Pulumi.local.yaml").read_bytes()
    up = demo("up", demo_dir, os.environ["PATH"])
    assert up.returncode == 0, up.stdout + up.stderr
    assert '{"host"' not in up.stdout  # the runner's JSON report is state, not log
    steps = up.stdout.split("The real engine on the demo's state", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    source, commands = steps[0].strip(), [line.strip() for line in steps[1:]]
    assert source.startswith("source ") and [c.split()[1] for c in commands] == ["preview", "up", "refresh", "stack"]
    for command in commands:
        flags = " --yes" if command.split()[1] in ("up", "refresh") else ""
        run = subprocess.run(["bash", "-c", f"{source} && {command}{flags}"], cwd=ROOT, capture_output=True, text=True,
                             timeout=900)
        assert run.returncode == 0, f"{command}: {run.stdout}{run.stderr}"
        verb = command.split()[1]
        if verb in ("preview", "up", "refresh"):
            # Every resource unchanged: the summary is one "N unchanged" line, nothing to change.
            assert re.search(r"^\s+\d+ unchanged$", run.stdout, re.M) and "StackReference" not in run.stdout, run.stdout
            assert not re.search(r"to (create|update|replace|delete)", run.stdout), run.stdout
        if verb in ("preview", "up"):  # (a refresh lists every resource as `~ refreshing`)
            assert " ~ " not in run.stdout and " + " not in run.stdout, run.stdout
    assert (ROOT / "stacks" / "Pulumi.local.yaml").read_bytes() == committed  # no salt written into it


@pytest.mark.upstream
def test_a_host_leaving_and_joining_under_the_real_engine_touches_no_other_host(demo_dir):
    """Tier 5, issue 38: on the demo's cluster under the real engine, worker-1 leaves the stack:
    its Command's delete drains it and deletes its Node (kubectl on the real API), cp-0's Command
    is unchanged and worker-0's changes only in its batch (nothing runs on the host), and the next
    preview changes nothing; worker-1 joins again: only its Command is created."""
    missing = pulumi_tools()
    require(not missing, f"tier 5: the Pulumi engine on PATH: {', '.join(missing)} (docs/operations.md)")
    import yaml

    up = demo("up", demo_dir, os.environ["PATH"])
    assert up.returncode == 0, up.stdout + up.stderr
    config = demo_dir / "Pulumi.local.yaml"
    document = yaml.safe_load(config.read_text())
    pools = document["config"]["flakefleet:pools"]
    workers = next(p for p in pools if p["name"] == "workers")
    everyone = list(workers["hosts"])

    def pulumi(verb: str) -> subprocess.CompletedProcess:
        flags = " --yes" if verb == "up" else ""
        return subprocess.run(["bash", "-c", f". {demo_dir / 'env.sh'} && pulumi {verb} --stack local "
                               f"--config-file {config} --non-interactive --diff{flags}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "HOME": str(demo_dir.parent)})

    def nodes() -> list[str]:
        out = subprocess.run(["sh", "-c", f". {demo_dir / 'env.sh'} && kubectl get nodes -o name"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(demo_dir.parent)})
        return out.stdout.split()

    workers["hosts"] = [h for h in everyone if h["name"] != "worker-1"]
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    leave = pulumi("up")
    out = leave.stdout + leave.stderr
    assert leave.returncode == 0, out
    assert "worker-1 drained, k3s stopped, node deleted (through cp-0)" in out, out
    assert re.search(r"^\s+- 1 deleted$", leave.stdout, re.M) and re.search(r"^\s+~ 1 updated$", leave.stdout, re.M), out
    assert "[worker-0] only bookkeeping changed" in out and "[cp-0]" not in out, out  # cp-0 unchanged, not run
    assert nodes() == ["node/cp-0", "node/worker-0"]
    again = pulumi("preview")
    assert again.returncode == 0 and not re.search(r"to (create|update|replace|delete)", again.stdout), again.stdout

    workers["hosts"] = everyone
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    join = pulumi("up")
    assert join.returncode == 0, join.stdout + join.stderr
    assert re.search(r"^\s+\+ 1 created$", join.stdout, re.M), join.stdout
    assert not re.search(r"(updated|deleted|replaced)$", join.stdout, re.M), join.stdout
    assert "[cp-0]" not in join.stdout + join.stderr and "[worker-0]" not in join.stdout + join.stderr
    assert nodes() == ["node/cp-0", "node/worker-0", "node/worker-1"]
