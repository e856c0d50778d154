# A pool whose hosts are installed by the deployer (pools[].bootstrap: nixos-anywhere): the disk
# layout (nixos/disko/<layout>.nix, a disko configuration; flake.nix imports it with disko's
# module), the disk it is written to, the boot loader its firmware needs, and the network the
# installed system comes up with.
{ config, lib, ... }:
let
  cfg = config.flakefleet.install;
in
{
  options.flakefleet.install = {
    disk = lib.mkOption {
      type = lib.types.str;
      # Why not /dev/sda: the pool's shared system never writes a disk, and a disko script built
      # from it by mistake must find no disk rather than wipe the first one. The install builds
      # the host's script with the disk its facts name (flakefleet/bootstrap).
      default = "/dev/disk/by-id/flakefleet-install-disk-set-at-install";
      example = "/dev/disk/by-id/nvme-SAMSUNG_MZQL21T9HCJR-00A07_S64GNE0R123456";
      description = "The disk the layout partitions when the host is installed (a /dev/disk/by-id path).";
    };
    firmware = lib.mkOption {
      type = lib.types.enum [
        "uefi"
        "bios"
      ];
      default = "uefi";
      description = ''
        How the machines this layout is for boot: `uefi` (systemd-boot on an EFI system partition,
        hardware/metal.nix) or `bios` (GRUB written to the install disk). Set by the layout; the
        install refuses a machine whose firmware is the other one.
      '';
    };
  };

  config = lib.mkMerge [
    {
      # The installed system's network is systemd-networkd's: DHCP on every Ethernet interface
      # (nixpkgs' 99-ethernet-default-dhcp, while networking.useDHCP stays on), unless the install
      # wrote the host's own /etc/systemd/network/10-flakefleet-uplink.network from the stack
      # (static addresses, matched by MAC), which networkd applies first. A file there outlives
      # every switch: NixOS links its own units into that directory one by one.
      networking.useNetworkd = lib.mkDefault true;
    }
    (lib.mkIf (cfg.firmware == "bios") {
      # Normal priority: over hardware/metal.nix's mkDefault systemd-boot, which needs UEFI.
      boot.loader.systemd-boot.enable = false;
      boot.loader.efi.canTouchEfiVariables = false;
      boot.loader.grub.enable = true;
    })
  ];
}
