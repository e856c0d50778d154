"""Deliver one host: put its system on it, switch atomically, prove health, roll back on failure.

Invoked by one `pulumi_command.local.Command` per host as `python -m flakefleet.deliver`. The
plan (no secrets) comes in FLAKEFLEET_DELIVERY as JSON; secrets come only through the
environment (FLAKEFLEET_SIGNING_KEY, and FLAKEFLEET_SECRET_<NAME> for each secret file), never
arguments, and never reach stdout or stderr, which Pulumi keeps in state.

Phases: build and sign locally -> wait for SSH (bounded, growing back-off) -> copy the missing
paths (`nix copy --to ssh-ng://`, bounded retries) -> stage facts and secrets over SSH stdin
(mode 0600, never the store) -> activate (profile generation + switch-to-configuration, with a
host-side dead-man switch) -> confirm over a new connection with a health check -> on any
failure, roll back to the previous generation and exit non-zero saying so.

SSH is OpenSSH with a known_hosts file built from the host's pinned key and
StrictHostKeyChecking=yes: no connection ever trusts on first use.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets as pysecrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

HOSTCTL = Path(__file__).with_name("hostctl.sh")
REMOTE_HOSTCTL = "/run/flakefleet/hostctl.sh"
NIX_FEATURES = ["--extra-experimental-features", "nix-command flakes"]
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")
SECRET_ENV_PREFIX = "FLAKEFLEET_SECRET_"
SIGNING_KEY_ENV = "FLAKEFLEET_SIGNING_KEY"
PLAN_ENV = "FLAKEFLEET_DELIVERY"
FACTS_PATH = "/etc/flakefleet/host.json"
K3S_DROP_IN_PATH = "/etc/rancher/k3s/config.yaml.d/50-flakefleet-host.yaml"
# The deployer's own SSH identity: deliberately not part of the plan (a Pulumi input), so that
# deployers with keys in different places do not see a change.
IDENTITY_ENV = "FLAKEFLEET_SSH_IDENTITY"
# The EC2 instance behind the host ("" for bring-your-own): a new instance needs its system again.
INSTANCE_ENV = "FLAKEFLEET_INSTANCE_ID"
# pulumi-command gives `update` and `delete` the stdout of the last create or update: our report.
PREVIOUS_STDOUT_ENV = "PULUMI_COMMAND_STDOUT"

# Exit codes of the runner.
OK, FAILED, ROLLED_BACK, UNREACHABLE = 0, 1, 3, 4


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class FileSpec:
    """A file to place on the host: inline content, or a secret read from the environment."""

    path: str
    mode: str = "0600"
    content: str | None = None
    secret_env: str | None = None  # FLAKEFLEET_SECRET_<NAME>


@dataclass(frozen=True)
class Endpoint:
    """A control plane the runner may ask about node readiness (`k3s kubectl` over pinned SSH)."""

    host: str
    address: str
    port: int
    user: str
    host_key: str


@dataclass(frozen=True)
class DeliveryPlan:
    """Everything the runner needs for one host, except secrets."""

    host: str
    address: str
    port: int
    user: str
    host_key: str  # "ssh-ed25519 AAAA..."
    system: str  # out path
    drv: str
    files: tuple[FileSpec, ...] = ()
    identity_file: str | None = None
    boot_timeout_s: float = 300
    health_timeout_s: float = 300
    deadman_margin_s: float = 30
    copy_attempts: int = 3
    substitute_on_destination: bool = False
    # Readiness gate: this host is confirmed only when every node of its batch reports Ready,
    # asked on the first reachable control plane of `ready_via`. Empty: no Kubernetes gate.
    batch: tuple[str, ...] = ()
    ready_via: tuple[Endpoint, ...] = ()
    # Removal: every control plane, to drain this node and delete its Node object through.
    control_planes: tuple[Endpoint, ...] = ()
    # Rebuild from a snapshot (once per restore id): the first control plane runs these k3s
    # arguments (a --cluster-reset); the other control planes wipe their etcd data instead.
    restore_id: str | None = None
    restore_args: tuple[str, ...] = ()
    # A system whose boot files differ from the booted ones: `auto` reboots into it (drained,
    # boot-loader one-shot, confirmed), `always` reboots whatever changed, `never` switches live
    # and reports the reboot as pending (flakefleet/reboot.py).
    reboot: str = "auto"
    # Where the system is built (`local`: the deployer, or the pool's builder before the first
    # wave; `target`: the host itself) and where the host fetches it from (the stack's binary
    # cache, then upstream caches; empty: `nix copy` from the deployer over SSH).
    build: str = "local"
    substituters: tuple[str, ...] = ()
    # A pool on `target` with the stack's cache builds once: its first host builds and this
    # runner pushes the result into the cache (`push`: bucket, region); the pool's other hosts
    # wait up to `build_wait_s` for it to appear there (`await_build`), then substitute it.
    push: dict | None = None
    await_build: bool = False
    build_wait_s: float = 3600

    @staticmethod
    def from_json(text: str) -> DeliveryPlan:
        raw = json.loads(text)
        raw["files"] = tuple(FileSpec(**f) for f in raw.get("files", ()))
        raw["batch"] = tuple(raw.get("batch", ()))
        raw["ready_via"] = tuple(Endpoint(**e) for e in raw.get("ready_via", ()))
        raw["control_planes"] = tuple(Endpoint(**e) for e in raw.get("control_planes", ()))
        raw["restore_args"] = tuple(raw.get("restore_args", ()))
        raw["substituters"] = tuple(raw.get("substituters", ()))
        return DeliveryPlan(**raw)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


# ----------------------------------------------------------------------------- pure construction


def known_hosts_line(address: str, port: int, host_key: str) -> str:
    """The known_hosts entry pinning `host_key` for address:port."""
    name = address if port == 22 else f"[{address}]:{port}"
    key_type, key_data = host_key.split()[:2]
    return f"{name} {key_type} {key_data}\n"


def ssh_options(known_hosts: Path, port: int, identity_file: str | None, connect_timeout: int = 10) -> list[str]:
    """OpenSSH options: the pinned known_hosts file only, strict checking, no prompts."""
    opts = [
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",  # trust only the stack's keys, not the machine's
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={connect_timeout}",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3",
        "-o", "LogLevel=ERROR",
        "-p", str(port),
    ]  # fmt: skip
    if identity_file:
        opts += ["-i", identity_file, "-o", "IdentitiesOnly=yes"]
    return opts


@contextmanager
def secret_file(content: str):
    """`content` (the signing key) in a file only this process's user can read, for the block."""
    with tempfile.TemporaryDirectory(prefix="flakefleet-key-") as tmp:
        path = Path(tmp) / "key"
        path.touch(0o600)
        path.write_text(content)
        yield path


@contextmanager
def pinned_known_hosts(address: str, port: int, host_key: str):
    """A known_hosts file holding just this host's pinned key, for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="flakefleet-ssh-") as tmp:
        known = Path(tmp) / "known_hosts"
        known.write_text(known_hosts_line(address, port, host_key))
        yield known


def ssh_prefix(known_hosts: Path, address: str, port: int, user: str, identity: str | None) -> list[str]:
    """The argv prefix of an ssh to one host, checked against `known_hosts` (the remote command follows)."""
    return ["ssh", *ssh_options(known_hosts, port, identity), f"{user}@{address}", "--"]


@contextmanager
def pinned_ssh(address: str, port: int, user: str, host_key: str, identity: str | None):
    """The argv prefix of an ssh to one host whose key is pinned (a known_hosts file for just this call)."""
    with pinned_known_hosts(address, port, host_key) as known:
        yield ssh_prefix(known, address, port, user, identity)


def ssh_argv(plan: DeliveryPlan, known_hosts: Path, remote: list[str], to: Endpoint | None = None) -> list[str]:
    """ssh to the plan's host (or `to`) running `remote` (each word quoted for the remote shell)."""
    target = to or plan
    return [*ssh_prefix(known_hosts, target.address, target.port, target.user, plan.identity_file),
            " ".join(shlex.quote(w) for w in remote)]


K3S = "/run/current-system/sw/bin/k3s"  # NixOS puts k3s there (environment.systemPackages)


def nodes_query(names: tuple[str, ...]) -> list[str]:
    """The kubectl call that reports the given nodes (missing ones are simply absent)."""
    return [K3S, "kubectl", "get", "nodes", *names, "--ignore-not-found", "-o", "json"]


def drain_commands(node: str, timeout_s: float) -> list[list[str]]:
    """What removing a node runs on a control plane, before and after its host stops k3s."""
    return [
        [K3S, "kubectl", "cordon", node],
        [K3S, "kubectl", "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", f"--timeout={int(timeout_s)}s"],
    ]


def delete_node_command(node: str) -> list[str]:
    """Deleting the Node object; for a server, k3s then removes its etcd member."""
    return [K3S, "kubectl", "delete", "node", node, "--ignore-not-found"]


def join_instead_of_init(contents: list[tuple[str, str, bytes]]) -> list[tuple[str, str, bytes]] | None:
    """The host files of an initializing control plane rewritten to join through the API endpoint
    (for when the cluster already exists: a replaced first control plane must not start a second
    cluster). None when the files do not initialize a cluster."""
    files = {path: (mode, data) for path, mode, data in contents}
    if K3S_DROP_IN_PATH not in files or FACTS_PATH not in files:
        return None
    drop_in = json.loads(files[K3S_DROP_IN_PATH][1])
    if not drop_in.pop("cluster-init", False):
        return None
    facts = json.loads(files[FACTS_PATH][1])
    drop_in["server"] = facts["server"] = facts["api_endpoint"]
    facts["init"] = False
    files[K3S_DROP_IN_PATH] = (files[K3S_DROP_IN_PATH][0], (json.dumps(drop_in, sort_keys=True) + "\n").encode())
    files[FACTS_PATH] = (files[FACTS_PATH][0], (json.dumps(facts, sort_keys=True) + "\n").encode())
    return [(path, mode, data) for path, (mode, data) in files.items()]


def ready_nodes(kubectl_json: str) -> set[str]:
    """Names of the nodes whose Ready condition is True, from `kubectl get nodes -o json`."""
    try:
        items = json.loads(kubectl_json).get("items", [])
    except (json.JSONDecodeError, AttributeError):
        return set()
    return {
        item["metadata"]["name"]
        for item in items
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in item.get("status", {}).get("conditions", []))
    }


def nix_copy_argv(plan: DeliveryPlan) -> list[str]:
    """`nix copy` of the system to the host's store over ssh-ng (NIX_SSHOPTS carries the pinning)."""
    argv = ["nix", *NIX_FEATURES, "copy", "--to", f"ssh-ng://{plan.user}@{plan.address}"]
    if plan.substitute_on_destination:
        argv.append("--substitute-on-destination")
    return [*argv, plan.system]


def staging_script(token: str, hostctl: str, files: list[tuple[str, str, bytes]]) -> str:
    """A shell script (sent on stdin, never as arguments) that stages files for `hostctl activate`.

    `files` holds (absolute path, octal mode, content). Contents travel base64-encoded inside
    here-documents; nothing of them appears on any command line.
    """
    stage = f"/run/flakefleet/{token}"
    lines = [
        "set -eu",
        "umask 077",
        "mkdir -p /run/flakefleet",
        f"base64 -d > {REMOTE_HOSTCTL}.new <<'FLAKEFLEET_EOF'",
        base64.b64encode(hostctl.encode()).decode(),
        "FLAKEFLEET_EOF",
        f"chmod 0700 {REMOTE_HOSTCTL}.new && mv -f {REMOTE_HOSTCTL}.new {REMOTE_HOSTCTL}",
        f"rm -rf {stage} && mkdir -p {stage}/files",
    ]
    for path, mode, content in files:
        if not SAFE_PATH.match(path) or "/../" in path or path.endswith("/.."):
            raise ValueError(f"unsafe path for a host file: {path!r}")
        target = f"{stage}/files{path}"
        lines += [
            f"mkdir -p {shlex.quote(os.path.dirname(target))}",
            f"base64 -d > {shlex.quote(target)} <<'FLAKEFLEET_EOF'",
            base64.b64encode(content).decode(),
            "FLAKEFLEET_EOF",
            f"chmod {mode} {shlex.quote(target)}",
        ]
    return "\n".join(lines) + "\n"


def files_digest(system: str, files: list[tuple[str, str, bytes]]) -> str:
    """What the host must have applied to be up to date: the system and every file (secrets hashed)."""
    digest = hashlib.sha256(system.encode())
    for path, mode, content in sorted(files):
        digest.update(b"\0" + path.encode() + b"\0" + mode.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


def backoff_delays(first: float = 1.0, factor: float = 2.0, cap: float = 30.0):
    """1, 2, 4, ... seconds, capped: how long to wait between attempts to reach a host."""
    delay = first
    while True:
        yield delay
        delay = min(delay * factor, cap)


# ----------------------------------------------------------------------------- running


class DeliveryFailed(Exception):
    """Delivery stopped; `code` is the runner's exit code, the message says what happened to the host."""

    def __init__(self, message: str, code: int = FAILED):
        super().__init__(message)
        self.code = code


@dataclass
class Report:
    """What a delivery did: the runner's last stdout line, which Pulumi keeps as the Command's
    stdout and hands back to the next `update` and to `delete` (PULUMI_COMMAND_STDOUT)."""

    host: str
    outcome: str = ""
    paths_copied: int = 0
    bytes_copied: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    found: dict[str, object] = field(default_factory=dict)  # the host before this delivery (drift)
    # What the host was given: an `update` with the same of each has nothing to do on the host.
    system: str = ""
    digest: str = ""  # files_digest of the planned files
    host_key: str = ""
    instance: str = ""
    restored: str | None = None
    # This Command's claim on the host: a delete whose owner no longer holds the host was
    # replaced by a newer delivery (any replacement: forced, trigger, instance) and removes nothing.
    owner: str = ""
    # The system's boot files differ from the booted ones and `reboot: never` kept it live.
    reboot_pending: bool = False


def report_in(stdout: str | None) -> dict:
    """The runner's JSON report in a Command's stdout (its last line); {} when absent."""
    lines = (stdout or "").strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}
    return report if isinstance(report, dict) else {}


def previous_report(env: dict[str, str]) -> dict:
    """The report of this Command's last create or update, from pulumi-command ({} when none)."""
    return report_in(env.get(PREVIOUS_STDOUT_ENV))


def parse_state(text: str) -> dict[str, str]:
    """`hostctl.sh state` output (key=value lines) as a dict."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def needs_delivery(plan: DeliveryPlan, previous: dict, digest: str, instance: str) -> list[str]:
    """Why an `update` must reach the host (empty: only bookkeeping changed, e.g. its batch)."""
    if not previous.get("system"):
        return ["no earlier delivery of this Command recorded"]
    wanted = {"system": plan.system, "digest": digest, "host_key": plan.host_key, "instance": instance}
    reasons = [f"{key} changed" for key, value in wanted.items() if previous.get(key, "") != value]
    if plan.restore_id is not None and previous.get("restored") != plan.restore_id:
        reasons.append(f"restore {plan.restore_id} pending")
    return reasons


class Delivery:
    """One host's delivery."""

    def __init__(self, plan: DeliveryPlan, env: dict[str, str]):
        if plan.identity_file is None and env.get(IDENTITY_ENV):
            plan = replace(plan, identity_file=env[IDENTITY_ENV])
        self.plan = plan
        self.env = env
        self.previous = previous_report(env)
        self.report = Report(
            plan.host,
            system=plan.system,
            host_key=plan.host_key,
            instance=env.get(INSTANCE_ENV, ""),
            owner=self.previous.get("owner") or pysecrets.token_hex(8),
        )
        self.token = f"{int(time.time())}-{pysecrets.token_hex(4)}"
        self._tmp = tempfile.TemporaryDirectory(prefix="flakefleet-deliver-")
        self.known_hosts = Path(self._tmp.name) / "known_hosts"
        self.known_hosts.write_text(
            "".join(
                known_hosts_line(e.address, e.port, e.host_key) for e in (plan, *plan.ready_via, *plan.control_planes)
            )
        )

    # -- helpers

    def cache_client(self, region: str):
        """The S3 client a push uses: the deployer's AWS credentials, as Pulumi's own."""
        from flakefleet.cache import s3_client

        return s3_client(region)

    def say(self, message: str) -> None:
        """Progress for people, on stderr: the Command logs stderr only (its stdout is the report,
        kept in state but not logged, so `pulumi up` does not print the JSON as well)."""
        print(f"[{self.plan.host}] {message}", file=sys.stderr, flush=True)

    def ssh(self, remote: list[str], stdin: str | None = None, timeout: float = 120, to: Endpoint | None = None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(ssh_argv(self.plan, self.known_hosts, remote, to), input=stdin, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess([], 255, "", f"ssh timed out after {timeout:.0f}s")

    def hostctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """hostctl.sh sent on stdin: works before anything is installed on the host."""
        return self.ssh(["sh", "-s", "--", *args], stdin=HOSTCTL.read_text(), timeout=timeout)

    def timed(self, phase: str, start: float) -> None:
        self.report.timings[phase] = round(time.monotonic() - start, 3)

    def file_contents(self) -> list[tuple[str, str, bytes]]:
        contents = []
        for f in self.plan.files:
            if f.secret_env is not None:
                if not f.secret_env.startswith(SECRET_ENV_PREFIX) or f.secret_env not in self.env:
                    raise DeliveryFailed(f"secret for {f.path} is missing from the environment ({f.secret_env})")
                data = self.env[f.secret_env].encode()
            else:
                data = (f.content or "").encode()
            contents.append((f.path, f.mode, data))
        return contents

    # -- phases

    def build(self) -> None:
        """Realise the system locally (a no-op when present) and sign it with the fleet's key;
        nothing when the host builds it or fetches it from the cache (published and signed once)."""
        if self.plan.build == "target" or self.plan.substituters:
            return
        start = time.monotonic()
        res = subprocess.run(["nix-store", "--realise", self.plan.drv], capture_output=True, text=True)
        if res.returncode != 0 or res.stdout.strip().splitlines()[-1:] != [self.plan.system]:
            raise DeliveryFailed(f"building {self.plan.drv} failed:\n{res.stderr.strip()[-2000:]}")
        key = self.env.get(SIGNING_KEY_ENV)
        if not key:
            raise DeliveryFailed(f"{SIGNING_KEY_ENV} is not set: hosts accept only signed systems")
        with secret_file(key) as key_file:
            res = subprocess.run(["nix", *NIX_FEATURES, "store", "sign", "--key-file", str(key_file), "--recursive", self.plan.system],
                                 capture_output=True, text=True)
        if res.returncode != 0:
            raise DeliveryFailed(f"signing {self.plan.system} failed: {res.stderr.strip()[-1000:]}")
        self.timed("build", start)

    def wait_for_ssh(self) -> None:
        start = time.monotonic()
        deadline = start + self.plan.boot_timeout_s
        attempts, last = 0, ""
        for delay in backoff_delays():
            attempts += 1
            res = self.ssh(["true"], timeout=30)
            if res.returncode == 0:
                self.timed("wait", start)
                return
            last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"ssh exit {res.returncode}"
            if "Host key verification failed" in res.stderr or "IDENTIFICATION HAS CHANGED" in res.stderr:
                last = "its SSH host key does not match the pinned key"
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
        raise DeliveryFailed(
            f"host {self.plan.host} ({self.plan.address}:{self.plan.port}) unreachable after {attempts} attempts "
            f"in {time.monotonic() - start:.0f}s: {last}; nothing was changed on it",
            UNREACHABLE,
        )

    def rollback(self, reason: str) -> DeliveryFailed:
        res = self.ssh([REMOTE_HOSTCTL, "rollback", self.token, reason], timeout=self.plan.health_timeout_s + 60)
        if res.returncode == 0 and res.stdout.strip():
            return DeliveryFailed(f"host {self.plan.host} {res.stdout.strip().splitlines()[-1]}{self.split_note()}",
                                  ROLLED_BACK)
        when = self.plan.health_timeout_s + self.plan.deadman_margin_s
        return DeliveryFailed(
            f"host {self.plan.host} could not be reached to roll back ({reason}); its dead-man switch rolls it "
            f"back to the previous generation {when:.0f}s after activation{self.split_note()}",
            ROLLED_BACK,
        )

    def split_note(self) -> str:
        """The rule for a failed host in a batch: the rollout stops, hosts of the batch that were
        confirmed keep the new system (their Commands succeeded; rolling them back would make the
        stack's state lie), and the error says the pool is split and where to see who runs what."""
        others = [h for h in self.plan.batch if h != self.plan.host]
        if not others:
            return ""
        return (f"; other hosts of its batch ({', '.join(others)}) may have switched to {self.plan.system}: "
                "the pool stays split until a `pulumi up` completes; `python -m flakefleet drift` and the "
                "stack output `pools` name every host not on its pool's system")

    def poll(self, attempt: Callable[[], tuple[bool, str]], deadline: float) -> tuple[bool, str]:
        """Call `attempt` (-> done, detail) with growing pauses until done or `deadline`."""
        detail = ""
        for delay in backoff_delays(first=0.5, cap=5):
            done, detail = attempt()
            if done or time.monotonic() + delay > deadline:
                return done, detail
            time.sleep(delay)
        return False, detail  # pragma: no cover (the generator is endless)

    def batch_ready(self) -> tuple[bool, str]:
        """Whether every node of the batch reports Ready, asked on the first reachable control plane."""
        problems = []
        for cp in self.plan.ready_via:
            res = self.ssh(nodes_query(self.plan.batch), to=cp, timeout=30)
            if res.returncode != 0:
                problems.append(f"{cp.host}: {res.stderr.strip()[-200:] or f'exit {res.returncode}'}")
                continue
            missing = sorted(set(self.plan.batch) - ready_nodes(res.stdout))
            return not missing, f"not Ready: {', '.join(missing)} (asked {cp.host})" if missing else ""
        return False, "no control plane answered: " + "; ".join(problems)

    def confirm(self, digest: str) -> None:
        """The health gate, over new connections: the host runs the system and is healthy, its
        batch's nodes are Ready; then the host is told to keep it (disarming the dead-man)."""
        start = time.monotonic()
        deadline = start + self.plan.health_timeout_s
        timeout = f"{self.plan.health_timeout_s:.0f}s"

        def healthy() -> tuple[bool, str]:
            res = self.ssh([REMOTE_HOSTCTL, "check", self.token, self.plan.system], timeout=30)
            if res.returncode == 2:  # the host decided already: its dead-man switch rolled it back
                raise DeliveryFailed(f"host {self.plan.host} {res.stderr.strip()}", ROLLED_BACK)
            return res.returncode == 0, res.stderr.strip() or f"exit {res.returncode}"

        ok, detail = self.poll(healthy, deadline)
        if not ok:
            raise self.rollback(f"not healthy within {timeout}: {detail}")
        if self.plan.batch:
            ok, detail = self.poll(self.batch_ready, deadline)
            if not ok:
                raise self.rollback(f"its batch was not Ready within {timeout}: {detail}")
        res = self.ssh([REMOTE_HOSTCTL, "confirm", self.token, self.plan.system, digest], timeout=30)
        if res.returncode != 0:
            raise DeliveryFailed(f"host {self.plan.host} {res.stderr.strip() or 'could not be confirmed'}", ROLLED_BACK)
        self.timed("confirm", start)

    def deliver(self) -> Report:
        """The phases, in order; each raises DeliveryFailed with what was (not) changed."""
        from flakefleet import transfer

        total = time.monotonic()
        self.build()
        self.wait_for_ssh()
        state = self.inspect()
        contents, digest = self.files_for(state)
        restore_pending = self.plan.restore_id is not None and state.get("restored") != self.plan.restore_id
        if state.get("current") == self.plan.system and state.get("applied") == digest and not restore_pending:
            self.report.outcome = "up to date"
            self.say(f"already runs {self.plan.system} with these files; nothing to do")
            transfer.share_pool_build(self)  # the pool's other hosts may be waiting for it in the cache
            return self.report
        transfer.transfer(self)
        self.stage(contents)
        if self.plan.restore_id:
            self.restore()
        self.switch(digest)
        self.timed("total", total)
        return self.report

    def inspect(self) -> dict[str, str]:
        """What the host runs, whether it changed outside flakefleet; then claim it for this delivery."""
        state = parse_state(self.hostctl("state").stdout)
        applied_profile = state.get("applied_profile", "")
        self.report.found = {
            "running": state.get("current", ""),
            "outside_flakefleet": bool(applied_profile) and state.get("profile", "") != applied_profile,
        }
        if self.report.found["outside_flakefleet"]:
            self.say(f"found profile {state.get('profile')} where flakefleet left {applied_profile}: "
                     "changed outside flakefleet")
        # Before anything else: this Command now holds the host, so the delete of a Command it
        # replaces (Pulumi runs it after this create) sees it was superseded.
        if self.hostctl("claim", self.report.owner, timeout=30).returncode != 0:
            raise DeliveryFailed(f"could not record this delivery on {self.plan.host}; nothing was changed")
        if not state.get("applied") and not state.get("owner"):
            self.forget_stale_node()
        self.fell_back(state)
        return state

    def files_for(self, state: dict[str, str]) -> tuple[list[tuple[str, str, bytes]], str]:
        """The host's files (joining an existing cluster where one runs) and their digest."""
        planned = self.file_contents()
        self.report.digest = files_digest(self.plan.system, planned)
        self.report.restored = self.plan.restore_id
        contents = self.existing_cluster_check(planned, state)
        return contents, files_digest(self.plan.system, contents)

    def stage(self, contents: list[tuple[str, str, bytes]]) -> None:
        start = time.monotonic()
        staged = self.ssh(["sh", "-s"], stdin=staging_script(self.token, HOSTCTL.read_text(), contents))
        if staged.returncode != 0:
            raise DeliveryFailed(f"staging files on {self.plan.host} failed; nothing was activated: {staged.stderr.strip()}")
        self.timed("stage", start)

    def switch(self, digest: str) -> None:
        """Reboot into the system when its boot files changed (and `reboot` allows), else activate
        it live; either way confirmed healthy or rolled back."""
        from flakefleet import reboot

        why = reboot.reasons(self)
        if why and self.plan.reboot != "never":
            reboot.reboot_into(self, digest, why)
            self.report.outcome = "rebooted"
            self.say(f"rebooted into {self.plan.system} and confirmed healthy")
            return
        self.report.reboot_pending = bool(why)
        self.activate()
        self.confirm(digest)
        self.report.outcome = "activated"
        pending = f"; reboot pending ({', '.join(why)} changed, reboot: never)" if why else ""
        self.say(f"switched to {self.plan.system} and confirmed healthy{pending}")

    def activate(self) -> None:
        start = time.monotonic()
        deadman = int(self.plan.health_timeout_s + self.plan.deadman_margin_s)
        act = self.ssh([REMOTE_HOSTCTL, "activate", self.plan.system, self.token, str(deadman)],
                       timeout=self.plan.health_timeout_s + 600)
        self.timed("activate", start)
        if act.returncode == 255:
            # The connection dropped (the new system may have restarted networking or sshd).
            # Whether the switch completed is decided by confirming over a new connection.
            self.say("connection lost during activation; confirming over a new connection")
        elif act.returncode != 0:
            detail = act.stderr.strip().splitlines()[-1] if act.stderr.strip() else ""
            why = "some units failed to start (exit 4)" if act.returncode == 4 else f"exit {act.returncode}"
            raise self.rollback(f"activation of {self.plan.system} failed: {why}{': ' + detail if detail else ''}")

    def roll_back_generation(self) -> str:
        """The operator's `nixos-rebuild --rollback` for one host (`flakefleet rollback`): activate the
        previous generation's system through the same dead-man switch and confirm over a new
        connection (its Node Ready), then record it so drift reports the host as rolled back."""
        self.wait_for_ssh()
        state = parse_state(self.hostctl("state").stdout)
        previous = self.hostctl("previous").stdout.strip()
        if not previous:
            raise DeliveryFailed(f"host {self.plan.host} has no earlier confirmed system to roll back to")
        running = state.get("current", "")
        self.plan = replace(self.plan, system=previous)
        staged = self.ssh(["sh", "-s"], stdin=staging_script(self.token, HOSTCTL.read_text(), []))
        if staged.returncode != 0:
            raise DeliveryFailed(f"preparing the rollback on {self.plan.host} failed: {staged.stderr.strip()}")
        deadman = int(self.plan.health_timeout_s + self.plan.deadman_margin_s)
        act = self.ssh([REMOTE_HOSTCTL, "activate", previous, self.token, str(deadman)],
                       timeout=self.plan.health_timeout_s + 600)
        if act.returncode not in (0, 255):
            raise self.rollback(f"activation of {previous} failed: exit {act.returncode}")
        self.confirm(state.get("applied", ""))
        self.hostctl("note-rollback", running, previous)
        return f"{self.plan.host} rolled back from {running or 'nothing'} to {previous}, confirmed healthy"

    def restore(self) -> None:
        """Before the switch starts k3s: restore the snapshot (first control plane) or wipe the old
        etcd data so the host joins the restored cluster (other control planes). Once per restore."""
        if self.plan.restore_args:
            # The token comes from the staged copy: the files are installed only at activation.
            args = [a.replace("@STAGE@", f"/run/flakefleet/{self.token}/files") for a in self.plan.restore_args]
            res = self.ssh([REMOTE_HOSTCTL, "restore", self.plan.restore_id, self.plan.system, *args], timeout=3600)
            what = "restoring the snapshot"
        else:
            res = self.ssh([REMOTE_HOSTCTL, "wipe-etcd", self.plan.restore_id], timeout=600)
            what = "wiping the old etcd data"
        if res.returncode != 0:
            raise DeliveryFailed(f"{what} on {self.plan.host} failed; nothing was activated: {res.stderr.strip()[-1000:]}")
        self.say(res.stdout.strip().splitlines()[-1] if res.stdout.strip() else what)

    def existing_cluster_check(
        self, contents: list[tuple[str, str, bytes]], state: dict[str, str]
    ) -> list[tuple[str, str, bytes]]:
        """An initializing control plane joins instead when it has no etcd data of its own while
        another control plane already runs the cluster (it was replaced): a second `cluster-init`
        would split the cluster. A host that joined that way keeps joining; one with its own etcd
        data keeps its planned files."""
        joining = join_instead_of_init(contents)
        if joining is None:
            return contents
        if state.get("applied") == files_digest(self.plan.system, joining):
            return joining
        if state.get("etcd_data") == "yes":
            return contents
        for cp in self.plan.control_planes:
            if cp.host == self.plan.host:
                continue
            if self.ssh([K3S, "kubectl", "get", "nodes", "-o", "name"], to=cp, timeout=20).returncode == 0:
                self.say(f"the cluster already runs on {cp.host}: joining it instead of initializing one")
                return joining
        return contents

    def fell_back(self, state: dict[str, str]) -> None:
        """A boot into a new generation that was never confirmed, and the host now runs another
        system (it was reset and its boot loader fell back): put the profile, files and boot
        default back to what it runs, say so, and stop; the next delivery tries again."""
        token, _, system = state.get("unconfirmed_boot", "").partition(" ")
        if not token or state.get("booted") == system:
            return
        res = self.hostctl("boot-rollback", token, "its boot was never confirmed", timeout=120)
        outcome = res.stdout.strip().splitlines()[0] if res.stdout.strip() else "could not be put back"
        self.report.found["fell_back_from"] = system
        raise DeliveryFailed(f"host {self.plan.host} fell back on a reset after its boot into {system} was never "
                             f"confirmed: {outcome}; the next `pulumi up` tries again", ROLLED_BACK)

    def forget_stale_node(self) -> None:
        """A fresh machine (nothing delivered on it yet) whose Node already exists took the place of
        a machine that is gone (a replaced instance, a re-imaged host): delete the stale Node through
        another control plane first, so k3s also drops the old machine's etcd member and quorum
        counts only live servers. The Node is registered again when this host's k3s starts."""
        for cp in self.plan.control_planes:
            if cp.host == self.plan.host:
                continue
            found = self.ssh([K3S, "kubectl", "get", "node", self.plan.host, "--ignore-not-found", "-o", "name"],
                             to=cp, timeout=30)
            if found.returncode != 0:
                continue
            if found.stdout.strip():
                res = self.ssh(delete_node_command(self.plan.host), to=cp, timeout=120)
                if res.returncode != 0:
                    raise DeliveryFailed(f"deleting the stale node {self.plan.host} on {cp.host} failed; nothing "
                                         f"was changed on the new machine: {res.stderr.strip()[-500:]}")
                self.say(f"a new machine took {self.plan.host}'s place: deleted its stale Node through {cp.host}")
            return

    def update(self) -> Report | None:
        """pulumi-command's `update` (an input changed, no replacement): deliver only when what the
        host is given changed; otherwise record the new inputs and touch no host (None)."""
        reasons = needs_delivery(self.plan, self.previous, files_digest(self.plan.system, self.file_contents()),
                                 self.report.instance)
        if not reasons:
            return None
        self.say("delivering: " + ", ".join(reasons))
        return self.deliver()

    def superseded(self, state: subprocess.CompletedProcess) -> bool:
        """Whether a newer delivery holds the host (this Command's delete belongs to a replacement)."""
        if state.returncode != 0:
            return False
        host = parse_state(state.stdout)
        mine = self.previous.get("owner")
        if mine and host.get("owner"):
            return host["owner"] != mine
        # A Command from before ownership: compare what it applied with what the host has.
        applied = host.get("applied")
        return bool(applied) and applied != files_digest(self.plan.system, self.file_contents())

    def remove(self) -> str:
        """Take the host out of the cluster: cordon and drain its node, stop k3s on it, delete the
        Node. Does nothing when a newer delivery holds the host: Pulumi deletes the old Command of
        every replacement (forced, trigger, instance) after the new one has claimed the host.
        Draining that fails stops the removal; with no control plane left to ask (the whole
        cluster is being destroyed), there is nothing to drain."""
        state = self.hostctl("state", timeout=30)
        if self.superseded(state):
            return f"{self.plan.host} was superseded by a newer delivery; nothing to remove"
        others = [cp for cp in self.plan.control_planes if cp.host != self.plan.host]
        via = next((cp for cp in others if self.ssh(["true"], to=cp, timeout=30).returncode == 0), None)
        if via is None:
            return f"{self.plan.host}: no other control plane reachable; nothing to drain (cluster being removed)"
        for argv in drain_commands(self.plan.host, self.plan.health_timeout_s):
            res = self.ssh(argv, to=via, timeout=self.plan.health_timeout_s + 60)
            if res.returncode != 0:
                raise DeliveryFailed(f"draining {self.plan.host} on {via.host} failed; it stays in the cluster: "
                                     f"{res.stderr.strip()[-500:]}")
        if state.returncode == 0:
            self.hostctl("retire", timeout=60)
        res = self.ssh(delete_node_command(self.plan.host), to=via, timeout=120)
        if res.returncode != 0:
            raise DeliveryFailed(f"deleting node {self.plan.host} on {via.host} failed: {res.stderr.strip()[-500:]}")
        return f"{self.plan.host} drained, k3s stopped, node deleted (through {via.host})"

    def close(self) -> None:
        self._tmp.cleanup()


def main() -> int:
    """`deliver` (create), `deliver --update` (update), `deliver --remove` (delete): one host's plan."""
    plan_text = os.environ.get(PLAN_ENV)
    if not plan_text:
        print(f"{PLAN_ENV} is not set", file=sys.stderr)
        return FAILED
    plan = DeliveryPlan.from_json(plan_text)
    delivery = Delivery(plan, dict(os.environ))
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    action = {"--update": delivery.update, "--remove": delivery.remove}.get(mode, delivery.deliver)
    try:
        result = action()
    except DeliveryFailed as err:
        print(f"[{plan.host}] {err}", file=sys.stderr, flush=True)
        return err.code
    finally:
        delivery.close()
    if isinstance(result, str):  # a removal says what it did
        print(f"[{plan.host}] {result}", file=sys.stderr, flush=True)
    elif result is None:  # an update with nothing for the host: Pulumi keeps the last delivery's report
        print(f"[{plan.host}] only bookkeeping changed (e.g. its batch); no command on the host", file=sys.stderr)
        print(os.environ.get(PREVIOUS_STDOUT_ENV, "").strip(), flush=True)
    else:
        print(json.dumps(asdict(result)), flush=True)
    return OK


if __name__ == "__main__":
    # Run the imported module, not this `__main__` copy: flakefleet.reboot imports
    # flakefleet.deliver, and its DeliveryFailed must be the one main() catches.
    from flakefleet import deliver

    sys.exit(deliver.main())
