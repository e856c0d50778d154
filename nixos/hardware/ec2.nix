# EC2 instances, virtual and *.metal, booted from the official NixOS AMI.
{ lib, modulesPath, ... }:
{
  imports = [ "${modulesPath}/virtualisation/amazon-image.nix" ];

  # amazon-init re-applies user data on every boot; the first boot of the AMI has installed the
  # pinned SSH host key, and from then on delivery owns the system.
  virtualisation.amazon-init.enable = lib.mkDefault false;
}
