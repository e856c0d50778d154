# Stand-in for nixpkgs' nixos/modules/virtualisation/amazon-image.nix: the options our EC2
# module sets, with their nixpkgs types. amazon-image.nix imports amazon-init.nix, which
# declares `virtualisation.amazon-init.enable` (bool, default true; read in
# nixos/modules/virtualisation/amazon-init.nix).
{ lib, ... }:
{
  options.virtualisation.amazon-init.enable = lib.mkOption {
    type = lib.types.bool;
    default = true;
  };
}
