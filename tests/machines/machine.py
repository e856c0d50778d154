"""nspawn test machines: systemd as PID 1 on the shared image (image.py), one overlay each, sshd on
their own 127.0.0.x, rebooted by a supervisor that plays the boot loader.

A machine has the interface of tests/testhosts.py's TestHost (name, address, port, host_key,
`path(inside)`, `current_system()`, `generations()`, `store_paths()`, faults, `stop()`), so the
host-tier tests and tests/local_fleet.py take either. What it adds is what only systemd shows:
`systemctl` (`show`), real reboots (`boots`, `boot_id()`), a host that never comes back
(`hold()`, `reset()`), a power cut (`power_cut()`).

Booting (the supervisor, one thread per machine) is what firmware, GRUB and NixOS' stage 2 do:
GRUB's choice from /boot/grub/grub.cfg and grubenv (grub.py; one-shot entries consumed), or a
systemd-boot stand-in's loader.conf and one-shot file; then PID 1 is the entry's
`init=<toplevel>/init` (the stand-in system's stage 2: its activation, /run/booted-system, then
systemd), or Debian's systemd when nothing NixOS was installed yet (a fresh machine).
`systemctl reboot` inside ends nspawn with exit code 133; the supervisor boots again unless held.

Needs root, systemd-nspawn and the cgroup v1 name=systemd hierarchy (each machine gets its own
cgroup there and in the unified one: without it units fail at random with 219/CGROUP).
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.machines import grub
from tests.machines.hostroot import make_fleet_host
from tests.machines.image import image
from tests.testhosts import TestFleet, keypair, make_fleet, poll, port_open

STARTED: list[Machine] = []  # every machine this process prepared: stopped at exit, whatever happened
REBOOT_EXIT = 133  # systemd-nspawn's exit status when the container asked for a reboot
APISERVER = "/var/lib/standin-apiserver"  # the stand-in k3s' shared cluster state (one per fleet)
KUBE_BIN = "/opt/kubernetes/bin"  # the real control plane's binaries, read-only in every machine
BOOT_TIMEOUT = 120.0  # a bound for set-up on a loaded machine, not an expectation (~3 s idle)


@dataclass
class Machine:
    """One nspawn machine (see the module docstring)."""

    __test__ = False

    name: str
    address: str
    port: int
    root: Path  # its directory: upper, work, merged, console.log
    host_key: str
    apiserver: Path
    bootloader: str = "grub"  # grub | systemd-boot: what its stand-in systems install
    boots: list[str] = field(default_factory=list)  # the toplevel (or "debian") of each boot
    proc: subprocess.Popen | None = field(default=None, repr=False)
    unit: str = ""
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _reset: threading.Event = field(default_factory=threading.Event, repr=False)
    _held: bool = False
    _hold_next: bool = False
    _thread: threading.Thread | None = field(default=None, repr=False)
    errors: list[str] = field(default_factory=list)

    # ---------------------------------------------------------------- the TestHost interface

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    def leader(self) -> int | None:
        """PID 1 of the running machine, as this machine's kernel numbers it."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None
        try:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:  # nspawn exited meanwhile: the machine is rebooting
            return None
        return int(children[0]) if children else None

    def path(self, inside: str) -> Path:
        """Where a path inside the machine is on this machine: its overlay, or for /run and /tmp
        (tmpfs of the running machine) through its PID 1's root."""
        rel = inside.lstrip("/")
        if any(inside == d or inside.startswith(d + "/") for d in ("/run", "/tmp")):
            pid = self.leader()
            return Path(f"/proc/{pid}/root/{rel}") if pid else self.root / "down" / rel
        return self.merged / rel

    def current_system(self) -> str | None:
        link = self.path("/run/current-system")
        return os.readlink(link) if link.is_symlink() else None

    def booted_system(self) -> str | None:
        link = self.path("/run/booted-system")
        return os.readlink(link) if link.is_symlink() else None

    def generations(self) -> list[str]:
        profiles = self.path("/nix/var/nix/profiles")
        return sorted(p.name for p in profiles.glob("system-*-link")) if profiles.exists() else []

    def store_paths(self) -> set[str]:
        store = self.merged / "nix" / "store"
        return {p.name for p in store.iterdir()} if store.exists() else set()

    def set_fault(self, fault: str, system: str) -> None:
        path = self.path("/etc/flakefleet/standin-fault")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as faults:
            faults.write(f"{fault} {system}\n")

    def clear_fault(self) -> None:
        self.path("/etc/flakefleet/standin-fault").unlink(missing_ok=True)

    def boot_default(self) -> str | None:
        """The system its boot loader boots when no one-shot entry is set."""
        if self.bootloader == "grub":
            entry = grub.default_entry(self.merged / "boot/grub/grub.cfg")
            return entry.toplevel if entry else None
        conf = self.merged / "boot/loader/loader.conf"
        if not conf.exists():
            return None
        entry = self.merged / "boot/loader/entries" / conf.read_text().split()[1]
        return next((l.split(" ", 1)[1] for l in entry.read_text().splitlines() if l.startswith("system ")), None)

    # ---------------------------------------------------------------- inside the machine

    def sh(self, script: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """`script` (sh) run inside the machine, in its namespaces, as root."""
        pid = self.leader()
        if pid is None:
            raise RuntimeError(f"machine {self.name} is not running")
        argv = ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--", "/bin/sh", "-c",
                f"export PATH=/usr/sbin:/usr/bin:/sbin:/bin; {script}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{self.name}: {script!r} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """`systemctl show UNIT -p PROP...` inside the machine."""
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def boot_id(self) -> str | None:
        """The running boot's id (nspawn gives every start of the container a new one)."""
        pid = self.leader()
        try:
            return Path(f"/proc/{pid}/root/proc/sys/kernel/random/boot_id").read_text().strip() if pid else None
        except OSError:
            return None

    def running(self) -> bool:
        """systemd inside reached `running` (or `degraded`, which the health gate reports) and sshd answers."""
        if self.leader() is None or not port_open(self.address, self.port):
            return False
        state = self.sh("systemctl is-system-running", check=False).stdout.strip()
        return state in ("running", "degraded")

    def wait_running(self, timeout: float = BOOT_TIMEOUT) -> None:
        poll(self.running, timeout, f"machine {self.name} booted", interval=0.1)

    # ---------------------------------------------------------------- boots and faults

    def start(self) -> None:
        """Boot the machine (supervised) and wait until systemd runs and sshd answers."""
        self._thread = threading.Thread(target=self._supervise, name=f"machine-{self.name}", daemon=True)
        self._thread.start()
        self.wait_running()

    def reboot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """`systemctl reboot` inside; returns once it runs again (a new boot id)."""
        before = self.boot_id()
        self.sh("systemctl reboot --no-block")
        poll(lambda: self.boot_id() not in (None, before) and self.running(), timeout, f"{self.name} rebooted", 0.1)

    def shutdown(self, timeout: float = BOOT_TIMEOUT) -> None:
        """`systemctl poweroff` inside (a clean shutdown, as EC2's StopInstances makes); returns once
        the machine is off. It stays off until `start`."""
        self.sh("systemctl poweroff --no-block")
        poll(lambda: self._thread is None or not self._thread.is_alive(), timeout, f"{self.name} powered off", 0.1)
        self._thread = None

    def hold(self) -> None:
        """The next boot never comes up (a kernel that hangs): its boot-loader choice is made and
        consumed, but the machine stays down until `reset`."""
        self._hold_next = True

    @property
    def held(self) -> bool:
        return self._held

    def reset(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Power-cycle a held machine: it boots what its boot loader chooses now."""
        self._hold_next = False
        self._reset.set()
        self.wait_running(timeout)

    def power_cut(self) -> None:
        """Every process of the machine dies at once (no shutdown); the supervisor boots it again."""
        self._kill_all()

    def stop(self) -> None:
        """Power off for good and clean up (idempotent)."""
        self._stop.set()
        self._reset.set()
        self._kill_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        for hierarchy in ("systemd", "unified"):
            remove_cgroup(Path("/sys/fs/cgroup") / hierarchy / self.unit)
        if os.path.ismount(self.merged):
            subprocess.run(["umount", "-l", str(self.merged)], check=False)

    # ---------------------------------------------------------------- the supervisor

    def _supervise(self) -> None:
        while not self._stop.is_set():
            argv = self._boot_argv()
            if self._hold_next:
                self._held = True
                self._reset.wait()
                self._reset.clear()
                self._held = False
                continue  # the reset boots what the boot loader chooses now
            with open(self.root / "console.log", "ab") as console:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                             preexec_fn=self._join_cgroup)
                code = self.proc.wait()
            if self._stop.is_set():
                return
            if code not in (REBOOT_EXIT, -signal.SIGKILL, 0):
                self.errors.append(f"nspawn exited {code} (see {self.root / 'console.log'})")
            if code == 0:  # powered off from inside: stays off
                return

    def _boot_argv(self) -> list[str]:
        """The boot loader's choice, as the nspawn command line that boots it."""
        init, label = self._choose()
        self.boots.append(label)
        return [
            "systemd-nspawn", "-D", str(self.merged), "--register=no", "--keep-unit", f"--machine={self.name}",
            "--console=read-only", "--kill-signal=SIGRTMIN+3", "--link-journal=no", "--resolv-conf=off",
            "--timezone=off", f"--bind={self.apiserver}:{APISERVER}", *self.kube_bind(), *self.firmware_bind(),
            "--", init,
        ]  # fmt: skip

    def firmware_bind(self) -> list[str]:
        """How the machine booted, as the kernel shows it (/sys/firmware/efi exists after a UEFI
        boot): by its boot loader, systemd-boot on UEFI, GRUB on BIOS, whatever this host booted by."""
        firmware = self.root / "firmware"
        (firmware / "efi").mkdir(parents=True, exist_ok=True) if self.bootloader == "systemd-boot" else \
            firmware.mkdir(parents=True, exist_ok=True)
        return [f"--bind-ro={firmware}:/sys/firmware"]

    def kube_bind(self) -> list[str]:
        from tests.kube.controlplane import binaries

        found = binaries()
        return [f"--bind-ro={found}:{KUBE_BIN}"] if found else []

    def _choose(self) -> tuple[str, str]:
        """(PID 1, what was booted): GRUB's or systemd-boot's entry, else Debian's own systemd."""
        if self.bootloader == "grub":
            entry = grub.boot(self.merged / "boot/grub/grub.cfg")
            toplevel = entry.toplevel if entry else None
        else:
            toplevel = systemd_boot_choice(self.merged / "boot/loader")
        if toplevel and (self.merged / toplevel.lstrip("/") / "init").exists():
            return f"{toplevel}/init", toplevel
        return "/lib/systemd/systemd", "debian"

    def _join_cgroup(self) -> None:
        for hierarchy in ("systemd", "unified"):
            group = Path("/sys/fs/cgroup") / hierarchy / self.unit
            group.mkdir(exist_ok=True)
            (group / "cgroup.procs").write_text(str(os.getpid()))

    def _kill_all(self) -> None:
        """SIGKILL every process in the machine's cgroups, nspawn too."""
        group = Path("/sys/fs/cgroup/systemd") / self.unit
        for _ in range(50):
            pids = cgroup_pids(group)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)


def systemd_boot_choice(loader: Path) -> str | None:
    """The stand-in systemd-boot (tests/standin/bootctl.sh): the one-shot entry (consumed), else
    loader.conf's default; the entry's `system` line."""
    oneshot = loader / "oneshot"
    if oneshot.exists():
        entry = oneshot.read_text().strip()
        oneshot.unlink()
    elif (loader / "loader.conf").exists():
        entry = (loader / "loader.conf").read_text().split()[1]
    else:
        return None
    path = loader / "entries" / entry
    if not path.exists():
        return None
    return next((l.split(" ", 1)[1] for l in path.read_text().splitlines() if l.startswith("system ")), None)


def cgroup_pids(group: Path) -> list[int]:
    pids = []
    for procs in group.rglob("cgroup.procs") if group.exists() else ():
        try:
            pids += [int(p) for p in procs.read_text().split()]
        except OSError:
            pass
    return pids


def remove_cgroup(group: Path) -> None:
    """rmdir the cgroup and what systemd made under it, deepest first."""
    if not group.exists():
        return
    for child in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            child.rmdir()
        except OSError:
            pass
    try:
        group.rmdir()
    except OSError:
        pass


# ------------------------------------------------------------------------------- set-up


def prepare(fleet: TestFleet, name: str, address: str, port: int, apiserver: Path, bootloader: str,
            host_key_file: Path | None = None) -> Machine:
    """A machine's directory: the overlay and what makes it this machine (written before its first
    boot): its pinned SSH host key and sshd address, the deployer's key, Nix trusting only the
    fleet's signing key, and the boot loader its systems install."""
    if port_open(address, port):
        raise RuntimeError(f"{address}:{port} is already in use; is another test run or demo running?")
    root = fleet.root / name
    for sub in ("upper", "work", "merged", "down"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={image()},upperdir={root / 'upper'},workdir={root / 'work'}", str(root / "merged")],
                   check=True)
    merged = root / "merged"
    key = root / "ssh_host_ed25519_key"
    if host_key_file is not None and not key.exists():  # a new machine given an old one's key
        shutil.copy(host_key_file, key)
        shutil.copy(host_key_file.with_suffix(".pub"), key.with_suffix(".pub"))
    host_key = keypair(key, name)
    make_fleet_host(merged, fleet, key, bootloader, sshd_extra=f"ListenAddress {address}:{port}\n")
    (merged / "boot/grub" if bootloader == "grub" else merged / "boot/loader").mkdir(parents=True, exist_ok=True)
    unit = f"flakefleet-{os.getpid()}-{secrets.token_hex(3)}-{name}"
    machine = Machine(name, address, port, root, host_key, apiserver, bootloader, unit=unit)
    STARTED.append(machine)
    return machine


@atexit.register
def stop_all() -> None:
    """No machine outlives the test process (an interrupted run, a fixture that failed half-way)."""
    for machine in STARTED:
        machine.stop()


def add_machine(fleet: MachineFleet, name: str, address: str, port: int = 2222, host_key_file: Path | None = None,
                bootloader: str = "grub") -> Machine:
    """One more machine in a running fleet (e.g. an empty machine taking a host's place), booted."""
    machine = prepare(fleet, name, address, port, fleet.apiserver, bootloader, host_key_file)
    fleet.hosts.append(machine)
    machine.start()
    return machine


@dataclass
class MachineFleet(TestFleet):
    """A TestFleet of machines sharing one stand-in API server directory, and the real control
    plane (tests/kube/) their stand-in k3s talks to."""

    __test__ = False

    apiserver: Path | None = None
    kube: object | None = None  # tests.kube.controlplane.ControlPlane

    def kubectl(self, *args: str, stdin: str | None = None):
        """kubectl as the cluster's admin, from the test process."""
        return self.kube.kubectl(self.kube.admin(), *args, stdin=stdin)

    def node(self, name: str) -> dict | None:
        """The Node as the API server has it, or None."""
        res = self.kubectl("get", "nodes", name, "--ignore-not-found", "-o", "json")
        return json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else None


@contextmanager
def running_machines(root: Path, addresses: dict[str, str], port: int = 2222, bootloader: str = "grub"):
    """A fleet with one booted machine per name -> address; every machine is stopped on the way out."""
    from tests.conftest import require
    from tests.kube import pki
    from tests.kube.controlplane import ControlPlane, binaries

    base = make_fleet(root)
    fleet = MachineFleet(**{**base.__dict__, "apiserver": root / "apiserver"})
    fleet.apiserver.mkdir(parents=True, exist_ok=True)
    # Leases renewed every second (a kubelet: 10 s) so tests need not wait; the grace period as
    # Kubernetes has it, so a Node stays Ready for 40 s after its kubelet stopped.
    (fleet.apiserver / "config.json").write_text(json.dumps({"lease_renew_s": 1, "grace_s": 40}))
    found = binaries()
    require(found is not None, "the Kubernetes binaries the machines' cluster runs on (scripts/kubernetes.sh)")
    machines: dict[str, Machine] = {}
    try:
        # The API where the stack's endpoint is (the first control plane's address, :6443), so the
        # kubeconfig the stack exports works as printed; the stand-in k3s itself listens on nothing.
        first = addresses.get("cp-0")
        fleet.kube = ControlPlane(root / "kube", found, pki.fleet_cas(), address=first or "127.0.0.1",
                                  api_port=6443 if first else 0, node_monitor_grace_s=40, wait_for_controllers=False)
        for name, address in addresses.items():
            machines[name] = prepare(fleet, name, address, port, fleet.apiserver, bootloader)
            fleet.hosts.append(machines[name])
        # The control plane starts while the machines boot (their k3s starts only with a delivery).
        failed: list[BaseException] = []

        def control_plane():
            try:
                fleet.kube.start().share(fleet.apiserver / "kube")
            except BaseException as err:  # noqa: BLE001 - raised again below, in the test's thread
                failed.append(err)
        threads = [threading.Thread(target=m.start) for m in machines.values()] + [threading.Thread(target=control_plane)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failed:
            raise failed[0]
        for m in machines.values():
            if not m.running():
                raise RuntimeError(f"machine {m.name} did not boot: {m.errors or (m.root / 'console.log').read_text()[-2000:]}")
        yield fleet, machines
    finally:
        for m in fleet.hosts:  # machines added later (add_machine) too
            if isinstance(m, Machine):
                m.stop()
        if fleet.kube is not None:
            fleet.kube.stop()
