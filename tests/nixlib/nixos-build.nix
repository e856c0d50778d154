# What nixpkgs' NixOS modules derive a system's toplevel and boot files from, as far as
# flakefleet's evaluation reads them, for tests/nixlib/eval-once.nix (tests/nixlib declares only what
# our modules set): nixos/modules/system/activation/top-level.nix (system.build.toplevel, whose
# derivation depends on the whole configuration: here its drvPath forces every option value,
# as tests/nixlib/eval-pools.nix's check does), system/boot/kernel.nix (kernelParams,
# modulesTree), system/boot/stage-1.nix (initialRamdisk), system/boot/loader/loader.nix
# (kernelFile, initrdFile). Nothing here is built.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  drv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    drvPath = "/nix/store/00000000000000000000000000000000-${name}.drv";
  };
  # Every option value, forced (nvidia's options are left out when it is off: their defaults
  # name the driver, as in nixpkgs, where nothing reads them then).
  everything =
    let
      c = removeAttrs config [
        "_module"
        "system"
      ];
    in
    if c.hardware.nvidia.enabled then c else c // { hardware = removeAttrs c.hardware [ "nvidia" ]; };
in
{
  options = {
    system.build.toplevel = mkOption { type = types.raw; };
    system.build.initialRamdisk = mkOption { type = types.raw; };
    system.modulesTree = mkOption { type = types.raw; };
    system.boot.loader.kernelFile = mkOption {
      type = types.str;
      default = "bzImage";
    };
    system.boot.loader.initrdFile = mkOption {
      type = types.str;
      default = "initrd";
    };
    boot.kernelParams = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
  };
  config.system = {
    build.toplevel = builtins.deepSeq everything (drv "nixos-system-${config.networking.hostName}");
    build.initialRamdisk = drv "initrd-linux";
    modulesTree = drv "linux-modules";
  };
}
