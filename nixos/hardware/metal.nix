# Bring-your-own machines. Defaults for a disk installed with the labels `nixos` (root) and
# `boot` (EFI system partition), e.g. by nixos-anywhere with disko; override per pool.
{ config, lib, ... }:
{
  boot.loader.systemd-boot.enable = lib.mkDefault true;
  boot.loader.efi.canTouchEfiVariables = lib.mkDefault true;
  # Added to nixpkgs' own list (system/boot/kernel.nix defines its defaults at normal priority:
  # under mkDefault this list would be dropped, usb_storage with it); a host adds more the same way.
  boot.initrd.availableKernelModules = [
    "nvme"
    "ahci"
    "xhci_pci"
    "usb_storage"
    "sd_mod"
  ];
  fileSystems."/" = lib.mkDefault {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
  # The EFI system partition systemd-boot writes to; a machine that boots by BIOS has none
  # (disko/bios-single-disk.nix turns systemd-boot off for GRUB).
  fileSystems."/boot" = lib.mkIf config.boot.loader.systemd-boot.enable (lib.mkDefault {
    device = "/dev/disk/by-label/boot";
    fsType = "vfat";
    # The ESP holds boot entries only; keep it unreadable for users.
    options = [ "umask=0077" ];
  });
  hardware.enableRedistributableFirmware = lib.mkDefault true;
}
