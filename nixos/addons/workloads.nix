# A cluster add-on, on the control planes of a cluster with workloads (flake.nix: roleModules):
# the objects of the stack's workloads (nixos/workloads/), deployed with services.k3s.manifests.
# The pools that run them preload their images (mixins/workload-images.nix).
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
  known = builtins.filter (w: workloads ? ${w.name}) cfg.workloads;
in
{
  assertions = [ (ff.workloadsExist workloads (map (w: w.name) cfg.workloads)) ];

  services.k3s.manifests = builtins.listToAttrs (
    map (w: {
      name = "workload-${w.name}";
      value.content = workloads.${w.name}.manifests w;
    }) known
  );
}
