# A pool whose hosts are installed by the deployer (pools[].bootstrap: nixos-anywhere): the disk
# layout (nixos/disko/<layout>.nix, a disko configuration; flake.nix imports it with disko's
# module) and the disk it is written to.
{ lib, ... }:
{
  options.flakefleet.install.disk = lib.mkOption {
    type = lib.types.str;
    # Why not /dev/sda: the pool's shared system never writes a disk, and a disko script built
    # from it by mistake must find no disk rather than wipe the first one. The install builds
    # the host's script with the disk its facts name (flakefleet/bootstrap).
    default = "/dev/disk/by-id/flakefleet-install-disk-set-at-install";
    example = "/dev/disk/by-id/nvme-SAMSUNG_MZQL21T9HCJR-00A07_S64GNE0R123456";
    description = "The disk the layout partitions when the host is installed (a /dev/disk/by-id path).";
  };
}
