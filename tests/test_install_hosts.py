"""Tier 5 (local: needs the fetched nixos-anywhere, FLAKEFLEET_UPSTREAM_NIXOS_ANYWHERE): nixos-anywhere's
own script, patched as nixos/flake.nix patches it, run for real against a test machine (systemd,
sshd, no NixOS) up to the kexec: with the phases left out (`--phases ""`) it still uploads its
SSH key and reads the machine's facts, over ssh pinned with flakefleet's options. With the
machine's key pinned it gets there; with another key pinned it never connects."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from flakefleet.bootstrap.command import known_hosts_text, nixos_anywhere_argv
from flakefleet.facts.flake import ROOT
from tests.local_fleet import local_fleet
from tests.test_install import INSTALL_KEY, checkout

pytestmark = pytest.mark.upstream

ADDRESSES = {"byo-0": "127.0.0.181"}


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    with local_fleet(tmp_path_factory.mktemp("install"), ADDRESSES) as (fleet, hosts):
        yield fleet, hosts["byo-0"]


def patched(tmp_path: Path) -> Path:
    """The locked nixos-anywhere script with the flake's substituteInPlace applied."""
    removed = re.search(r"--replace-fail \\\n\s*'([^']+)' \"\"", (ROOT / "nixos" / "flake.nix").read_text()).group(1)
    script = checkout("nixos-anywhere", tmp_path) / "src" / "nixos-anywhere.sh"
    script.write_text(script.read_text().replace(removed, ""))
    return script


def run(fleet, host, pinned: str, tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    script = patched(tmp_path)
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_text(host.address, host.port, pinned))
    for name in ("disko", "system", "kexec.tar.gz"):  # only checked to exist without the phases
        (tmp_path / name).write_text(name)
    extra = tmp_path / "root"
    extra.mkdir()
    argv = nixos_anywhere_argv(str(script), str(tmp_path / "disko"), str(tmp_path / "system"),
                               str(tmp_path / "kexec.tar.gz"), extra, known, host.address, host.port, "root",
                               str(fleet.client_key))
    argv[argv.index("--phases") + 1] = ""
    try:
        return subprocess.run(["bash", *argv], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:  # still retrying
        text = lambda b: b.decode() if isinstance(b, bytes) else (b or "")
        return subprocess.CompletedProcess(argv, 124, text(err.stdout), text(err.stderr))


def test_it_reaches_the_machine_only_through_the_pinned_key_and_reads_its_facts(machine, tmp_path):
    fleet, host = machine
    proc = run(fleet, host, host.host_key, tmp_path)
    out = proc.stdout + proc.stderr
    assert "Uploading install SSH keys" in out and "Gathering machine facts" in out, out[-3000:]
    # Without a phase it stops after the facts; on this machine at the check flakefleet makes first.
    assert proc.returncode == 0 or "no cpio command found" in out, out[-3000:]
    assert "Warning: Permanently added" not in out  # nothing was trusted on first use


def test_another_pinned_key_is_never_connected_to(machine, tmp_path):
    """nixos-anywhere retries its key upload without end (`until ssh-copy-id ...; do sleep 3`):
    with another key pinned it never gets past it, so the runner reads the facts over the same
    pins first and stops with one line instead (flakefleet/bootstrap/runner.py)."""
    fleet, host = machine
    proc = run(fleet, host, INSTALL_KEY, tmp_path, timeout=30)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Gathering machine facts" not in out
    assert "Host key verification failed" in out or "REMOTE HOST IDENTIFICATION HAS CHANGED" in out, out[-2000:]
