# Stand-in for disko's NixOS module (nix-community/disko 878ec37, what nixos/flake.lock pins), as
# far as our layouts (nixos/disko/) use it, for the module-system tier in CI where disko cannot
# be fetched; tier 5 checks the layouts against disko's real types (tests/test_install.py).
# Restated from:
#   module.nix            options disko.devices and disko.enableConfig (default true); the
#                         system's fileSystems are the devices' _config; system.build.diskoScript
#   lib/types/disk.nix    disk: type "disk", device (an absolute path), content (gpt here)
#   lib/types/gpt.nix     gpt: partitions attrsOf { type (default "8300"), size, label (default
#                         "<disk type>-<disk name>-<partition name>"), device
#                         (/dev/disk/by-partlabel/<label>), content }; a disk with an EF02
#                         (BIOS boot) partition: boot.loader.grub.devices = [ its device ]
#                         (gpt.nix `_config`)
#   lib/types/filesystem.nix  filesystem: format, mountpoint (nullOr absolute path),
#                         mountOptions (default [ "defaults" ]); _config: fileSystems.<mountpoint>
#                         = { device; fsType = format; options = mountOptions; }
# Anything else (other content types, lvm, zfs, mdadm) is not declared here: a layout using it
# fails evaluation in this tier until it is restated too.
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  absolute = types.strMatching "/.*";
  filesystem = types.submodule {
    options = {
      type = mkOption { type = types.enum [ "filesystem" ]; };
      format = mkOption { type = types.str; };
      mountpoint = mkOption {
        type = types.nullOr absolute;
        default = null;
      };
      mountOptions = mkOption {
        type = types.listOf types.str;
        default = [ "defaults" ];
      };
      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
    };
  };
  partition =
    diskName:
    types.submodule (
      { name, config, ... }:
      {
        options = {
          type = mkOption {
            type = types.strMatching "[A-Fa-f0-9]{4}";
            default = "8300";
          };
          size = mkOption {
            type = types.either (types.enum [ "100%" ]) (types.strMatching "[0-9]+[KMGTP]?");
            default = "0";
          };
          label = mkOption {
            type = types.str;
            default = "disk-${diskName}-${name}";
          };
          device = mkOption {
            type = types.str;
            default = "/dev/disk/by-partlabel/${config.label}";
          };
          content = mkOption {
            type = types.nullOr filesystem;
            default = null;
          };
        };
      }
    );
  disk = types.submodule (
    { name, ... }:
    {
      options = {
        type = mkOption { type = types.enum [ "disk" ]; };
        device = mkOption { type = absolute; };
        content = mkOption {
          type = types.submodule {
            options = {
              type = mkOption { type = types.enum [ "gpt" ]; };
              partitions = mkOption { type = types.attrsOf (partition name); };
            };
          };
        };
      };
    }
  );
  disks = config.disko.devices.disk;
  parts = builtins.concatMap (d: map (p: { inherit d p; }) (builtins.attrValues d.content.partitions)) (builtins.attrValues disks);
in
{
  options.disko = {
    devices.disk = mkOption {
      type = types.attrsOf disk;
      default = { };
    };
    enableConfig = mkOption {
      type = types.bool;
      default = true;
    };
  };
  options.system.build.diskoScript = mkOption { type = types.str; };
  config = lib.mkIf config.disko.enableConfig {
    fileSystems = builtins.listToAttrs (
      map (x: {
        name = x.p.content.mountpoint;
        value = {
          device = x.p.device;
          fsType = x.p.content.format;
          options = x.p.content.mountOptions;
        };
      }) (builtins.filter (x: x.p.content != null && x.p.content.mountpoint != null) parts)
    );
    boot.loader.grub.devices = map (d: d.device) (
      builtins.filter (d: builtins.any (p: p.type == "EF02") (builtins.attrValues d.content.partitions)) (
        builtins.attrValues disks
      )
    );
    # What the install runs on the host: the stand-in names the disks it would write.
    system.build.diskoScript = "disko-script for ${lib.concatMapStringsSep " " (d: d.device) (builtins.attrValues disks)}";
  };
}
