# What nixpkgs' NixOS modules derive a system's toplevel and boot files from, as far as
# flakefleet's evaluation reads them (the flake's lib.bootOf and lib.evaluate), for
# tests/nixlib/eval-once.nix. Declarations read in NixOS/nixpkgs (search tool, file by file):
# - nixos/modules/system/boot/kernel.nix: boot.kernelParams, listOf (strMatching
#   ''([^"[:space:]]|"[^"]*")+'' named "kernelParam"), default []; system.modulesTree, listOf
#   path, default [], internal, apply = pkgs.aggregateModules (here a stand-in derivation), set
#   to [ kernel ] ++ boot.extraModulePackages.
# - nixos/modules/system/boot/loader/loader.nix and activation/top-level.nix:
#   system.boot.loader.kernelFile and initrdFile, str, internal; initrdFile defaults to
#   "initrd"; kernelFile's default is computed (config.boot.kernelPackages.kernel.target, before
#   that pkgs.stdenv.hostPlatform.linux-kernel.target): here x86_64's value, "bzImage", which
#   our stand-in kernel does not carry.
# - nixos/modules/system/build.nix: system.build is a submodule whose freeformType is
#   lazyAttrsOf (uniq unspecified); toplevel (activation/top-level.nix) and initialRamdisk
#   (boot/stage-1.nix) are members of it. Declared here as options of type raw, which like uniq
#   takes one definition (tests/nixlib/disko.nix declares system.build.diskoScript the same way).
# The toplevel's derivation depends on the whole configuration: here its drvPath forces every
# option value, as tests/nixlib/eval-pools.nix's check does. Nothing here is built.
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
    system.modulesTree = mkOption {
      type = types.listOf types.path;
      internal = true;
      default = [ ];
      apply = _paths: drv "kernel-modules";
    };
    system.boot.loader.kernelFile = mkOption {
      internal = true;
      type = types.str;
      default = "bzImage";
    };
    system.boot.loader.initrdFile = mkOption {
      internal = true;
      type = types.str;
      default = "initrd";
    };
    boot.kernelParams = mkOption {
      type = types.listOf (
        types.strMatching ''([^"[:space:]]|"[^"]*")+''
        // {
          name = "kernelParam";
          description = "string, with spaces inside double quotes";
        }
      );
      default = [ ];
    };
  };
  config.system = {
    build.toplevel = builtins.deepSeq everything (drv "nixos-system-${config.networking.hostName}");
    build.initialRamdisk = drv "initrd-linux";
    modulesTree = [ config.boot.kernelPackages.kernel ] ++ config.boot.extraModulePackages;
  };
}
