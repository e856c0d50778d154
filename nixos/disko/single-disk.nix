# The default disk layout of a bootstrapped host (pools[].disk_layout: single-disk): one GPT disk
# with an EFI system partition for systemd-boot (hardware/metal.nix) and the rest ext4 as root,
# as disko's example/simple-efi.nix. The installed system mounts them by partition label
# (disko names them disk-main-ESP and disk-main-root), so the pool's system is the same on every
# host; only the install's disko script names the host's disk (flakefleet.install.disk).
{ config, ... }:
{
  disko.devices.disk.main = {
    type = "disk";
    device = config.flakefleet.install.disk;
    content = {
      type = "gpt";
      partitions = {
        ESP = {
          type = "EF00";
          size = "512M";
          content = {
            type = "filesystem";
            format = "vfat";
            mountpoint = "/boot";
            # The ESP holds boot entries only; keep it unreadable for users.
            mountOptions = [ "umask=0077" ];
          };
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
