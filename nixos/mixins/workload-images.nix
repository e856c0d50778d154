# Opt-in (a pool that runs workloads of nixos/workloads/, flake.nix: roleModules): this pool's
# nodes preload the images of the workloads that run on it (services.k3s.images: no registry),
# and carry the pool label the workloads' pods select. The control planes deploy the workloads'
# objects (addons/workloads.nix).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  ff = import ../lib;
  cfg = config.flakefleet;
  workloads = import ../workloads { inherit pkgs lib; };
in
{
  assertions = [ (ff.workloadsExist workloads cfg.images) ];

  services.k3s.images = map (n: workloads.${n}.image) (builtins.filter (n: workloads ? ${n}) cfg.images);

  # The workloads' pods select their pools by this label.
  services.k3s.nodeLabel = [ "flakefleet.io/pool=${cfg.pool}" ];
}
