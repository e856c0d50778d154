"""Test hosts on one machine: each an sshd on its own loopback address, in its own mount
namespace with its own /nix, /run and flakefleet directories, so copies really cross stores.

Used by the tier-3 and tier-4 tests, `bench/deliver_fanout.py` and `make demo`. Needs root,
`unshare` and OpenSSH's sshd. Traffic goes only to 127.0.0.x addresses of these hosts.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
# Host paths that get a per-host directory bound over them inside the host's namespace.
PRIVATE_DIRS = {
    "nix": "/nix",
    "run": "/run",
    "etc-flakefleet": "/etc/flakefleet",
    "etc-rancher": "/etc/rancher",
    "var-lib-flakefleet": "/var/lib/flakefleet",
    "var-lib-rancher": "/var/lib/rancher",
    "boot": "/boot",
    # The host's own /root: sessions do not run this machine's shell set-up (pyenv's rehash takes
    # a lock shared by every host; an emulated power-off that kills it mid-way left it held).
    "root": "/root",
}


def prerequisites() -> list[str]:
    """What is missing on this machine to run test hosts (empty when all is there)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root")
    for tool in (SSHD, "unshare", "ssh", "ssh-keygen", "nix", "nix-store", "nix-env", "nix-daemon", "setsid"):
        if shutil.which(tool) is None and not Path(tool).is_file():
            missing.append(tool)
    return missing


def poll(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns a truthy value, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout}s")
        time.sleep(interval)


def keypair(path: Path, comment: str) -> str:
    """An ed25519 key pair at `path`; returns the public key line."""
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class TestHost:
    """One running test host."""

    __test__ = False  # not a pytest test class

    name: str
    address: str
    port: int
    root: Path
    host_key: str
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def path(self, inside: str) -> Path:
        """Where a path inside the host lives on this machine (e.g. /run/current-system)."""
        for local, mount in PRIVATE_DIRS.items():
            if inside == mount or inside.startswith(mount + "/"):
                return self.root / local / inside[len(mount) + 1 :]
        raise ValueError(f"{inside} is not private to the host")

    def current_system(self) -> str | None:
        link = self.path("/run/current-system")
        return os.readlink(link) if link.is_symlink() else None

    def generations(self) -> list[str]:
        profiles = self.path("/nix/var/nix/profiles")
        return sorted(p.name for p in profiles.glob("system-*-link")) if profiles.exists() else []

    def store_paths(self) -> set[str]:
        store = self.root / "nix" / "store"
        return {p.name for p in store.iterdir()} if store.exists() else set()

    def set_fault(self, fault: str, system: str) -> None:
        (self.path("/etc/flakefleet/standin-fault")).write_text(f"{fault} {system}\n")

    def clear_fault(self) -> None:
        self.path("/etc/flakefleet/standin-fault").unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class TestFleet:
    """Keys shared by the test hosts, and the hosts."""

    __test__ = False

    root: Path
    client_key: Path
    client_public: str
    signing_secret: str
    signing_public: str
    hosts: list[TestHost] = field(default_factory=list)

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()


def make_fleet(root: Path) -> TestFleet:
    """Client key and Nix signing key for a set of test hosts under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    client_key = root / "deploy_ed25519"
    client_public = keypair(client_key, "flakefleet-test-deployer")
    secret_file = root / "signing.secret"
    if not secret_file.exists():
        secret = subprocess.run(["nix", "--extra-experimental-features", "nix-command", "key", "generate-secret",
                                 "--key-name", "flakefleet-test-1"], check=True, capture_output=True, text=True).stdout
        secret_file.write_text(secret)
        secret_file.chmod(0o600)
    secret = secret_file.read_text().strip()
    public = subprocess.run(["nix", "--extra-experimental-features", "nix-command", "key", "convert-secret-to-public"],
                            input=secret, check=True, capture_output=True, text=True).stdout.strip()
    return TestFleet(root, client_key, client_public, secret, public)


def start_host(fleet: TestFleet, name: str, address: str, port: int = 2222, host_key_file: Path | None = None) -> TestHost:
    """Start one test host; returns when its sshd accepts connections."""
    if port_open(address, port):
        # Another test run (or a leftover sshd) holds it: talking to it would test the wrong host.
        raise RuntimeError(f"{address}:{port} is already in use; is another test run or demo running?")
    root = fleet.root / name
    for local, mount in PRIVATE_DIRS.items():
        (root / local).mkdir(parents=True, exist_ok=True)
        Path(mount).mkdir(parents=True, exist_ok=True)  # the mount point on this machine
    (root / "run" / "sshd").mkdir(exist_ok=True)
    key = host_key_file or root / "ssh_host_ed25519_key"
    host_key = keypair(key, name)
    (root / "authorized_keys").write_text(fleet.client_public + "\n")
    conf_dir = root / "nix-conf"
    conf_dir.mkdir(exist_ok=True)
    # The host's Nix: offline, and it accepts only paths signed by the fleet's key.
    (conf_dir / "nix.conf").write_text(
        "experimental-features = nix-command flakes\nbuild-users-group =\nsandbox = false\nsubstituters =\n"
        f"require-sigs = true\ntrusted-public-keys = {fleet.signing_public}\n"
    )
    config = root / "sshd_config"
    config.write_text(
        f"ListenAddress {address}:{port}\nHostKey {key}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nStrictModes no\nUsePAM no\nPidFile {root / 'sshd.pid'}\n"
        f"SetEnv NIX_CONF_DIR={conf_dir}\n"
    )
    host = TestHost(name, address, port, root, host_key)
    launch(host)
    fleet.hosts.append(host)
    return host


def in_namespace(root: Path, command: str) -> list[str]:
    """argv running `command` (sh) in a new mount namespace with the host's private directories."""
    mounts = " && ".join(f"mount --bind {root / local} {mount}" for local, mount in PRIVATE_DIRS.items())
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", f"{mounts} && {command}"]


NAMESPACE_FILE = "mnt-namespace"  # under a host's root: its mount namespace, as /proc/PID/ns/mnt names it


def kill_namespace(namespace: str, spare: int | None = None) -> int:
    """SIGKILL every process in mount namespace `namespace` (`mnt:[4026...]`) but `spare`; how many."""
    killed = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != spare:
            try:
                if os.readlink(entry / "ns" / "mnt") == namespace:
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed += 1
            except OSError:
                pass  # gone meanwhile, or not ours to look at
    return killed


def launch(host: TestHost) -> None:
    """Start the host's sshd (its config under its root); returns when it accepts connections."""
    root = host.root
    host.proc = subprocess.Popen(
        in_namespace(root, f"exec {SSHD} -D -f {root / 'sshd_config'} -E {root / 'sshd.log'}"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    proc = host.proc
    try:
        poll(lambda: port_open(host.address, host.port) or proc.poll() is not None, 10, f"sshd of {host.name}")
    except TimeoutError:
        host.stop()
        raise
    if proc.poll() is not None:
        log = root / "sshd.log"
        raise RuntimeError(f"sshd of {host.name} exited: {proc.stderr.read().decode()} {log.read_text() if log.exists() else ''}")
    # What stops every process of the host later, even ones its sshd no longer parents (make demo-down).
    (root / NAMESPACE_FILE).write_text(os.readlink(f"/proc/{proc.pid}/ns/mnt"))


ROOT = Path(__file__).resolve().parent.parent


def run_as_deployer(fleet: TestFleet, module: list[str], env: dict[str, str], timeout: float = 120):
    """`python -m <module...>` as this fleet's deployer: its SSH identity and Nix signing key, the
    project on PYTHONPATH, plus `env` (plans, secrets)."""
    full = {**os.environ, "FLAKEFLEET_SSH_IDENTITY": str(fleet.client_key),
            "FLAKEFLEET_SIGNING_KEY": fleet.signing_secret, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", *module], env=full, capture_output=True, text=True, timeout=timeout)


@contextmanager
def running_fleet(root: Path, addresses: dict[str, str]):
    """A fleet with one test host per name -> address; every host is stopped on the way out."""
    fleet = make_fleet(root)
    try:
        yield fleet, {name: start_host(fleet, name, address) for name, address in addresses.items()}
    finally:
        fleet.stop()


def run_command_as_deployer(fleet: TestFleet, command: str, env: dict[str, str], timeout: float = 180):
    """A Command resource's command string, as pulumi-command runs it (`sh -c`, from the project
    directory), with this fleet's deployer identity and signing key plus `env`."""
    full = {**os.environ, "FLAKEFLEET_SSH_IDENTITY": str(fleet.client_key),
            "FLAKEFLEET_SIGNING_KEY": fleet.signing_secret, **env}
    return subprocess.run(["sh", "-c", command], cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout)
