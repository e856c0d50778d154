"""Reboots of test hosts, emulated as faithfully as delivery can tell (the hosts share this
machine's kernel, so none can really reboot).

A host asks for a reboot the way hostctl.sh does without systemd: /run/flakefleet/reboot-requested.
The emulation then does what a reboot does to the things delivery looks at: sshd and the host's
services stop; /run is emptied (a tmpfs); the stand-in boot loader picks the one-shot entry (and
clears it, as systemd-boot clears LoaderEntryOneShot when it reads it) or else the default; that
entry's system becomes /run/booted-system and /run/current-system; the system's services start
as systemd would start them (`switch-to-configuration standin-boot`: k3s, if its files are
there); sshd comes back after `delay`. A host told to `hang` stays down after a reboot, its
one-shot consumed, until `reset` power-cycles it into its default entry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from tests.testhosts import TestHost, in_namespace, kill_namespace, launch


def power_off(host: TestHost) -> None:
    """Every process of the host stops, sessions in flight included (they share its mount namespace)."""
    if host.proc is not None and host.proc.poll() is None:
        kill_namespace(os.readlink(f"/proc/{host.proc.pid}/ns/mnt"), spare=host.proc.pid)
    host.stop()


def boot_entry(host: TestHost) -> str | None:
    """The system the stand-in boot loader boots next: the one-shot entry (consumed), else the default."""
    loader = host.path("/boot/loader")
    oneshot = loader / "oneshot"
    if oneshot.exists():
        entry = oneshot.read_text().strip()
        oneshot.unlink()
    elif (loader / "loader.conf").exists():
        entry = (loader / "loader.conf").read_text().split()[1]
    else:
        return None
    lines = (loader / "entries" / entry).read_text().splitlines()
    return next(line.split(" ", 1)[1] for line in lines if line.startswith("system "))


class Reboots:
    """Watches the hosts for reboot requests and emulates each reboot (a context manager)."""

    def __init__(self, hosts: dict[str, TestHost], delay: float = 0.5):
        self.hosts = hosts
        self.delay = delay
        self.hang: set[str] = set()
        self.booted: dict[str, list[str]] = {name: [] for name in hosts}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Reboots:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.errors and exc[0] is None:
            raise RuntimeError(f"reboot emulation failed: {self.errors[0]!r}") from self.errors[0]

    def _watch(self) -> None:
        while not self._stop.is_set():
            for name, host in list(self.hosts.items()):
                if host.path("/run/flakefleet/reboot-requested").exists():
                    try:
                        self._reboot(name)
                    except Exception as err:  # noqa: BLE001 - kept, re-raised on exit
                        self.errors.append(err)
            self._stop.wait(0.05)

    def _reboot(self, name: str) -> None:
        host = self.hosts[name]
        power_off(host)
        run = host.root / "run"
        for child in run.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        (run / "sshd").mkdir()
        if name in self.hang:
            boot_entry(host)  # the one-shot was used for the boot that never came up
            return
        self._boot(name)

    def _boot(self, name: str) -> None:
        host = self.hosts[name]
        system = boot_entry(host)
        if system is not None:
            for link in ("booted-system", "current-system"):
                (host.root / "run" / link).symlink_to(system)
            subprocess.run(in_namespace(host.root, f"{system}/bin/switch-to-configuration standin-boot"),
                           capture_output=True, timeout=60)
            self.booted[name].append(system)
        time.sleep(self.delay)  # the boot takes a while: SSH is down meanwhile
        launch(host)

    def reset(self, name: str) -> None:
        """Power-cycle a hung host: it boots its default entry."""
        self.hang.discard(name)
        self._boot(name)


def loader_default(host: TestHost) -> str:
    """The system of the stand-in boot loader's default entry."""
    loader = host.path("/boot/loader")
    entry = (loader / "loader.conf").read_text().split()[1]
    lines = (Path(loader) / "entries" / entry).read_text().splitlines()
    return next(line.split(" ", 1)[1] for line in lines if line.startswith("system "))
