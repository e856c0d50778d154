"""The root file system of the nspawn test machines: Debian's systemd, OpenSSH, Nix and Python (for
the stand-in switch and k3s), set up to run systemd the way NixOS does where delivery can tell.

Built once by debootstrap from the recipe below and cached under FLAKEFLEET_MACHINE_CACHE
(default /var/cache/flakefleet-tests); the cache key is this file's text, so a change to the
recipe builds a new image. Each machine mounts an overlay on it (machine.py): tests never change
the image.

What the image sets, and why:
- the manager's PATH is a directory holding systemd's own programs only: NixOS runs its manager
  with `PATH=<systemd>/bin` (`systemctl show-environment` there), so a transient unit
  (`systemd-run`) finds nothing else, while NixOS' own units get coreutils & co. through their
  `Environment=PATH` (nixos/lib/systemd-lib.nix, stage2ServiceConfig: "Default path for systemd
  services. Should be quite minimal.");
- no networkd, resolved or getty: the machines share this machine's network (networkd would manage
  its interfaces) and have no console; no timers that would run apt or fstrim;
- an empty fstab (no disk to mount), no host keys (each machine gets its pinned key), no apt lists.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

SUITE = "bookworm"
INCLUDE = ["systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "procps"]
# debootstrap cannot resolve nix-bin's virtual dependencies; apt-get installs them after.
# cpio: what a server's Debian has and debootstrap's minimal set lacks; nixos-anywhere needs it
# (with tar and setsid) on a machine it installs (tests/test_bootstrap_hosts.py).
# python3-boto3, python3-cryptography: what the pull agent of autoscaled pools imports (its Nix
# package brings nixpkgs' own; the stand-in's runs on the machine's python3).
PACKAGES = ["nix-bin", "python3", "grub2-common", "cpio", "python3-boto3", "python3-cryptography"]
MASKED = [
    "systemd-networkd.service", "systemd-networkd.socket", "systemd-networkd-wait-online.service",
    "systemd-resolved.service", "console-getty.service", "getty@.service", "getty.target",
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
    "fstrim.timer", "systemd-timesyncd.service",
]  # fmt: skip
SYSTEMD_BIN = "/usr/lib/flakefleet-standin/systemd/bin"  # the manager's whole PATH, as on NixOS
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def cache_root() -> Path:
    """The cache directory, absolute (a relative one broke qemu-img, which resolves a backing file
    against the overlay's directory); unset or empty means the default."""
    return Path(os.environ.get("FLAKEFLEET_MACHINE_CACHE") or "/var/cache/flakefleet-tests").absolute()


def recipe_key() -> str:
    """The image's cache key: this file, which is the whole recipe."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def prerequisites() -> list[str]:
    """What this machine lacks to build and run the machines (empty when nothing)."""
    missing = [] if os.geteuid() == 0 else ["root"]
    missing += [t for t in ("debootstrap", "systemd-nspawn", "ssh", "ssh-keygen") if shutil.which(t) is None]
    if not Path("/sys/fs/cgroup/systemd").is_dir():
        missing.append("the cgroup v1 name=systemd hierarchy (/sys/fs/cgroup/systemd)")
    return missing


def image() -> Path:
    """The image's root directory, built first when the cache has none for this recipe."""
    root = cache_root() / f"machine-{recipe_key()}"
    done = root / "root" / ".flakefleet-image"
    if done.exists():
        return root / "root"
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; a waiting session finds it done
        if not done.exists():
            build(root)
    return root / "root"


def build(root: Path) -> None:
    """debootstrap, packages, configuration; into a scratch directory, renamed when complete."""
    scratch = root.with_name(root.name + ".building")
    shutil.rmtree(scratch, ignore_errors=True)
    target = scratch / "root"
    target.mkdir(parents=True)
    start = time.monotonic()
    mirror = os.environ.get("FLAKEFLEET_DEBIAN_MIRROR", DEFAULT_MIRROR)
    log = scratch / "build.log"
    with open(log, "w") as out:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE, str(target), mirror], out)
        in_chroot(target, ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES], out)
        in_chroot(target, ["apt-get", "clean"], out)
        configure(target)
    (target / ".flakefleet-image").write_text(f"{recipe_key()} built in {time.monotonic() - start:.0f}s\n")
    shutil.rmtree(root, ignore_errors=True)
    scratch.rename(root)


def run(argv: list[str], out) -> None:
    proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"building the test machine image: {' '.join(argv[:3])} failed (exit "
                           f"{proc.returncode}); see {out.name}")


def in_chroot(target: Path, argv: list[str], out) -> None:
    """`argv` in the image being built, with /proc and /dev (apt's maintainer scripts want them)."""
    shutil.copy("/etc/resolv.conf", target / "etc/resolv.conf")
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    mounts = [("proc", target / "proc", ["-t", "proc", "proc"]), ("dev", target / "dev", ["--bind", "/dev"]),
              ("sys", target / "sys", ["--bind", "/sys"])]
    for _, where, how in mounts:
        subprocess.run(["mount", *how, str(where)], check=True)
    try:
        proc = subprocess.run(["chroot", str(target), *argv], stdout=out, stderr=subprocess.STDOUT, env=env)
    finally:
        for _, where, _ in reversed(mounts):
            subprocess.run(["umount", "-l", str(where)], check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"building the test machine image: {' '.join(argv[:3])} failed (exit "
                           f"{proc.returncode}); see {out.name}")


def configure(target: Path) -> None:
    """The settings every machine shares (the module docstring says why)."""
    (target / "etc/fstab").write_text("")
    (target / "etc/resolv.conf").write_text("")
    for key in (target / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    for apt_lists in (target / "var/lib/apt/lists").glob("*_*"):
        apt_lists.unlink()
    for unit in MASKED:
        link = target / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    systemd_bin = target / SYSTEMD_BIN.lstrip("/")
    systemd_bin.mkdir(parents=True)
    for program in systemd_programs(target):
        (systemd_bin / program.name).symlink_to(f"/{program.relative_to(target)}")
    conf = target / "etc/systemd/system.conf.d"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "10-flakefleet-nixos-path.conf").write_text(f'[Manager]\nDefaultEnvironment="PATH={SYSTEMD_BIN}"\n')


def systemd_programs(target: Path) -> list[Path]:
    """The programs Debian's systemd package installs in bin directories (NixOS: <systemd>/bin)."""
    listing = (target / "var/lib/dpkg/info/systemd.list").read_text().splitlines()
    programs: dict[str, Path] = {}
    for path in listing:
        if os.path.dirname(path) in ("/bin", "/usr/bin") and (target / path.lstrip("/")).is_file():
            programs.setdefault(os.path.basename(path), target / path.lstrip("/"))
    return [programs[name] for name in sorted(programs)]
