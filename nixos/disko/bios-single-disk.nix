# A layout for machines that boot by BIOS (pools[].disk_layout: bios-single-disk): GRUB in the
# disk's first sectors, its core image in a 1 MiB BIOS boot partition (type EF02), and the rest
# ext4 as root, as disko's example/gpt-bios-compat.nix. disko puts a disk with an EF02 partition
# into boot.loader.grub.devices (lib/types/gpt.nix, `_config`): GRUB is written to that disk,
# so the system names the host's own disk and each host has its own system (the stack asks for
# per_host_closures and install_disk with this layout). The install refuses it on a machine that
# booted by UEFI, and single-disk on one that booted by BIOS (flakefleet/bootstrap/hardware.py).
{ config, lib, ... }:
{
  flakefleet.install.firmware = "bios";

  disko.devices.disk.main = {
    type = "disk";
    device = config.flakefleet.install.disk;
    content = {
      type = "gpt";
      partitions = {
        boot = {
          size = "1M";
          type = "EF02";
        };
        root = {
          size = "100%";
          content = {
            type = "filesystem";
            format = "ext4";
            mountpoint = "/";
          };
        };
      };
    };
  };
}
