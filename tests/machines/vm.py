"""qemu guests under software emulation (TCG): a real Debian kernel, a real GRUB on a BIOS disk,
real reboots. For what only a kernel and a boot loader show; slow (about a minute a boot).

The disk image is built once from the recipe below (debootstrap, then GRUB installed into the
disk's MBR through a loop device) and cached like the nspawn image; each guest boots a qcow2
overlay of it, so its runs start from the same disk. The guest's keys (SSH host key, the
deployer's key, the Nix signing key it trusts) are generated with the image and kept in the
cache with it (test keys, for guests only reachable on 127.0.0.x).

The guest:
- is kept off every network: `-netdev user,restrict=on` (no route out, no DNS), sshd forwarded to
  127.0.0.x:2222 only;
- boots GRUB from its disk; its first grub.cfg boots Debian's kernel (a fresh machine); a
  stand-in NixOS system's `switch-to-configuration boot` replaces it with NixOS' layout, whose
  entries boot the same kernel with `init=<toplevel>/init` (the stand-in's stage 2);
- runs systemd with NixOS' minimal manager PATH, as the nspawn machines do;
- with `-no-reboot`, a reset makes qemu exit; the supervisor boots it again (a new qemu on the
  same disk), unless the guest is being power-cycled by `reset`.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.machines.hostroot import make_fleet_host
from tests.machines.image import DEFAULT_MIRROR, INCLUDE, SUITE, cache_root, configure, in_chroot, run
from tests.testhosts import TestFleet, keypair, make_fleet, poll, port_open

VM_PACKAGES = ["linux-image-amd64", "grub-pc", "initramfs-tools", "kmod", "udev", "nix-bin", "python3", "e2fsprogs"]
INITRD_MODULES = ["virtio_pci", "virtio_blk", "ext4"]  # what the initramfs needs to mount the root (MODULES=list)
DISK_SIZE_MB = 2048
GRUB_SERIAL = "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n"
KERNEL_PARAMS = "root=LABEL=root rw console=ttyS0 quiet"
BOOT_TIMEOUT = 900.0  # a bound for a loaded 2-core machine; a boot takes 50-110 s here


def recipe_key() -> str:
    """This file and the nspawn image's recipe (shared settings) make the key."""
    parts = [Path(__file__).read_bytes(), (Path(__file__).parent / "image.py").read_bytes()]
    return hashlib.sha256(b"".join(parts)).hexdigest()[:16]


def prerequisites() -> list[str]:
    missing = [] if os.geteuid() == 0 else ["root"]
    for tool in ("qemu-system-x86_64", "qemu-img", "debootstrap", "sfdisk", "losetup", "mkfs.ext4", "partx"):
        if shutil.which(tool) is None:
            missing.append(tool)
    return missing


@dataclass(frozen=True)
class VMImage:
    """The cached disk, the kernel and initrd it boots, and the keys of its guests."""

    dir: Path

    @property
    def disk(self) -> Path:
        return self.dir / "disk.raw"

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def fleet_root(self) -> Path:
        return self.dir / "fleet"

    @property
    def host_key_file(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"


def vm_image() -> VMImage:
    """The image for this recipe, built first when the cache has none."""
    import fcntl

    image = VMImage(cache_root() / f"vm-{recipe_key()}")
    if (image.dir / "done").exists():
        return image
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (image.dir / "done").exists():
            build(image)
    return image


def build(image: VMImage) -> None:
    scratch = image.dir.with_name(image.dir.name + ".building")
    shutil.rmtree(scratch, ignore_errors=True)
    root = scratch / "root"
    root.mkdir(parents=True)
    start = time.monotonic()
    with open(scratch / "build.log", "w") as out:
        packages(root, out)
        configure(root)
        guest(root, VMImage(scratch))
        disk(root, VMImage(scratch), out)
    shutil.rmtree(root)
    (scratch / "done").write_text(f"{recipe_key()} built in {time.monotonic() - start:.0f}s\n")
    shutil.rmtree(image.dir, ignore_errors=True)
    scratch.rename(image.dir)


def packages(root: Path, out) -> None:
    """debootstrap and the guest's packages, reused from the cache while their lists are the same
    (the slow part: a kernel, GRUB, Nix; the settings below change more often)."""
    key = hashlib.sha256(json.dumps([SUITE, INCLUDE, VM_PACKAGES, INITRD_MODULES]).encode()).hexdigest()[:16]
    cached = cache_root() / f"vm-packages-{key}"
    if not (cached / ".done").exists():
        shutil.rmtree(cached, ignore_errors=True)
        run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE, str(cached),
             os.environ.get("FLAKEFLEET_DEBIAN_MIRROR", DEFAULT_MIRROR)], out)
        initramfs = cached / "etc/initramfs-tools"
        initramfs.mkdir(parents=True, exist_ok=True)
        (initramfs / "conf.d").mkdir(exist_ok=True)
        (initramfs / "conf.d/flakefleet").write_text("MODULES=list\n")
        (initramfs / "modules").write_text("".join(m + "\n" for m in INITRD_MODULES))
        in_chroot(cached, ["apt-get", "install", "-y", "--no-install-recommends", *VM_PACKAGES], out)
        in_chroot(cached, ["apt-get", "clean"], out)
        (cached / ".done").write_text(key + "\n")
    shutil.rmtree(root)
    subprocess.run(["cp", "-a", str(cached), str(root)], check=True)
    (root / ".done").unlink()


def guest(root: Path, image: VMImage) -> None:
    """What a guest is beyond the nspawn machines' settings: a disk to mount, a network (DHCP from
    qemu), sshd on port 22, its keys, GRUB on a serial console."""
    (root / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    for unit in ("systemd-networkd.service", "systemd-networkd.socket"):  # the nspawn image masks them
        (root / "etc/systemd/system" / unit).unlink(missing_ok=True)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "systemd-networkd.service").symlink_to("/lib/systemd/system/systemd-networkd.service")
    (root / "etc/systemd/network/10-dhcp.network").write_text("[Match]\nName=en*\n\n[Network]\nDHCP=ipv4\n")
    for unit in ("serial-getty@ttyS0.service", "systemd-networkd-wait-online.service"):
        (root / "etc/systemd/system" / unit).unlink(missing_ok=True)
        (root / "etc/systemd/system" / unit).symlink_to("/dev/null")
    fleet = make_fleet(image.fleet_root)
    keypair(image.host_key_file, "flakefleet-vm")
    make_fleet_host(root, fleet, image.host_key_file, "grub", sshd_extra="UseDNS no\n")
    standin = root / "etc/flakefleet-standin"
    (standin / "grub-extra-config").write_text(GRUB_SERIAL)  # boot.loader.grub.extraConfig, as a host would set it
    shutil.copy(root / "vmlinuz", image.kernel)  # what the stand-in systems' kernel derivation copies
    shutil.copy(root / "initrd.img", image.initrd)
    (root / "boot/grub").mkdir(parents=True, exist_ok=True)
    (root / "boot/grub/grub.cfg").write_text(
        GRUB_SERIAL + "set timeout=0\n"
        f'menuentry "Debian GNU/Linux" {{\n  linux /vmlinuz {KERNEL_PARAMS}\n  initrd /initrd.img\n}}\n'
    )


def disk(root: Path, image: VMImage, out) -> None:
    """A BIOS disk: one partition with the root file system, GRUB in the MBR and the gap after it."""
    raw = image.disk
    subprocess.run(["truncate", "-s", f"{DISK_SIZE_MB}M", str(raw)], check=True)
    subprocess.run(["sfdisk", "-q", str(raw)], input="start=2048, type=83, bootable\n", text=True, check=True)
    run(["mkfs.ext4", "-F", "-q", "-L", "root", "-d", str(root), "-E", "offset=1048576", str(raw),
         f"{DISK_SIZE_MB - 1}M"], out)
    loop = subprocess.run(["losetup", "--show", "-f", "-P", str(raw)], capture_output=True, text=True, check=True).stdout.strip()
    mnt = image.dir / "mnt"
    mnt.mkdir(exist_ok=True)
    try:
        part = Path(f"{loop}p1")
        # No udev: ask the kernel for the partition; devtmpfs makes its node (a moment later).
        subprocess.run(["partx", "-a", loop], check=False, capture_output=True)
        try:
            poll(part.exists, 10, f"{part}", interval=0.1)
        except TimeoutError:
            major, minor = (Path("/sys/block") / Path(loop).name / f"{Path(loop).name}p1" / "dev").read_text().split(":")
            os.mknod(part, 0o600 | 0o060000, os.makedev(int(major), int(minor)))
        subprocess.run(["mount", str(part), str(mnt)], check=True)
        try:
            # Without udev grub-probe cannot tell the partition's disk: the device map says it.
            (mnt / "boot/grub/device.map").write_text(f"(hd0) {loop}\n")
            in_chroot(mnt, ["grub-install", "--target=i386-pc", "--modules=part_msdos ext2", loop], out)
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)


# ------------------------------------------------------------------------------- a guest


RUNNING: list[VM] = []


@atexit.register
def stop_all() -> None:
    for vm in RUNNING:
        vm.stop()


@dataclass
class VM:
    """One guest on a qcow2 overlay of the image, supervised (see the module docstring)."""

    __test__ = False

    name: str
    address: str
    port: int
    root: Path
    image: VMImage
    host_key: str = ""
    user: str = "root"
    boots: int = 0
    # More of the host's ports forwarded into the guest: `tcp:ADDR:PORT-GUESTADDR:22` (a guest
    # address the guest takes itself, e.g. a static one; the default forward goes to its lease).
    forwards: tuple[str, ...] = ()
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def console(self) -> Path:
        return self.root / "console.log"

    def argv(self) -> list[str]:
        return [
            "qemu-system-x86_64", "-accel", "tcg,tb-size=128", "-cpu", "max", "-m", "1024", "-smp", "1",
            "-drive", f"file={self.root / 'disk.qcow2'},if=virtio,format=qcow2,cache=unsafe",
            "-netdev", ",".join([f"user,id=n0,restrict=on,hostfwd=tcp:{self.address}:{self.port}-:22",
                                 *(f"hostfwd={f}" for f in self.forwards)]),
            "-device", "virtio-net-pci,netdev=n0", "-display", "none", "-nodefaults",
            "-serial", f"file:{self.root / 'serial.log'}", "-no-reboot",
        ]  # fmt: skip

    def start(self) -> None:
        if port_open(self.address, self.port):
            raise RuntimeError(f"{self.address}:{self.port} is already in use")
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(self.image.disk),
                        str(self.root / "disk.qcow2")], check=True)
        self.host_key = self.image.host_key_file.with_suffix(".pub").read_text().strip()
        RUNNING.append(self)
        self._thread = threading.Thread(target=self._supervise, name=f"vm-{self.name}", daemon=True)
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            self.boots += 1
            with open(self.console, "ab") as console:
                self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
                self.proc.wait()
            serial = self.root / "serial.log"
            if serial.exists():  # keep every boot's serial output
                with open(self.console, "ab") as console:
                    console.write(serial.read_bytes())
                serial.unlink()

    def reset(self) -> None:
        """Power-cycle: qemu killed, the supervisor boots the disk again."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


def vm_fleet(image: VMImage) -> TestFleet:
    """The deployer's side of the image's keys (client key, signing key)."""
    return make_fleet(image.fleet_root)


def ssh(vm: VM, fleet: TestFleet, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`command` (sh) in the guest, over SSH with its pinned key."""
    from flakefleet.common.ssh import PinnedSSH

    remote = PinnedSSH([vm], str(fleet.client_key))
    try:
        return remote.run(vm, ["sh", "-c", command], timeout=timeout)
    finally:
        remote.close()


def wait_ssh(vm: VM, fleet: TestFleet, timeout: float = BOOT_TIMEOUT) -> None:
    poll(lambda: ssh(vm, fleet, "true", timeout=30).returncode == 0, timeout, f"guest {vm.name} up", interval=2)


@contextmanager
def booted_guest(name: str, address: str, root: Path, forwards: tuple[str, ...] = ()):
    """(image, fleet, vm): a guest booted and answering SSH at address:2222; stopped on the way out.
    The VM tier's prerequisites are required (a failure under FLAKEFLEET_REQUIRE_ALL)."""
    from tests.conftest import require
    from tests.testhosts import prerequisites as host_prerequisites

    missing = host_prerequisites() + prerequisites()
    require(not missing, f"the VM tier needs: {', '.join(missing)}")
    image = vm_image()
    fleet = vm_fleet(image)
    vm = VM(name, address, 2222, root / name, image, forwards=forwards)
    vm.start()
    try:
        wait_ssh(vm, fleet)
        yield image, fleet, vm
    finally:
        vm.stop()
