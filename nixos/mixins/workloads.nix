# Nix-built workloads (nixos/workloads/): this pool's nodes preload the images of the workloads
# that run on it, and control planes deploy the workloads' objects.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.flakefleet;
  workloads = import ../workloads { inherit pkgs lib; };
  named = cfg.images ++ map (w: w.name) cfg.workloads;
  unknown = builtins.filter (n: !(workloads ? ${n})) named;
  known = builtins.filter (w: workloads ? ${w.name}) cfg.workloads;
in
{
  assertions = [
    {
      assertion = unknown == [ ];
      message = "flakefleet: no workload ${lib.concatStringsSep ", " unknown} in nixos/workloads/ (it has: ${lib.concatStringsSep ", " (builtins.attrNames workloads)})";
    }
  ];

  services.k3s.images = map (n: workloads.${n}.image) (builtins.filter (n: workloads ? ${n}) cfg.images);

  # The workloads' pods select their pools by this label.
  services.k3s.nodeLabel = lib.optional (cfg.images != [ ]) "flakefleet.io/pool=${cfg.pool}";

  services.k3s.manifests = lib.mkIf (cfg.role == "control-plane") (
    builtins.listToAttrs (
      map (w: {
        name = "workload-${w.name}";
        value.content = workloads.${w.name}.manifests w;
      }) known
    )
  );
}
