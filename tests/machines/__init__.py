"""Test hosts that run systemd: systemd-nspawn machines (real systemd as PID 1, real reboots of the
userspace) and a few qemu guests (a real kernel and GRUB), for the host tier.

- image.py: the machines' root file system, built once from a recipe (debootstrap) and cached;
- grub.py: what GRUB does with NixOS' grub.cfg and grubenv at boot (the nspawn machines' boot loader);
- machine.py: one machine (an overlay on the image, its own cgroup, sshd on its own 127.0.0.x) and
  the supervisor that boots it again after a reboot, or holds it;
- vm.py: qemu guests under software emulation, for what only a kernel and a boot loader show.
"""
