# Opt-in (pools[].per_host_closures): bake the host facts into the closure instead of
# reading them at runtime. One evaluation and one build per host instead of per pool.
{ config, lib, ... }:
let
  ff = import ../lib;
  host = config.flakefleet.host;
in
{
  # Why not `mkIf` alone: the module system evaluates the content of an `mkIf` to learn which
  # options it defines even when the condition is false, so everything below must evaluate
  # with `host = null` (every shared pool). Option *values* under it are not forced, but
  # `services.k3s` is a set of options, so its attribute names are: `optionalAttrs` decides
  # before looking inside, and `k3sHostOptions` is total on null besides.
  config = lib.mkIf (host != null) {
    networking.hostName = host.name;
    environment.etc."flakefleet/host.json".text = builtins.toJSON host;
    # nodeName, nodeIP, and clusterInit (the first server) or serverAddr (the others).
    services.k3s = lib.optionalAttrs (host != null) (ff.k3sHostOptions host);
  };
}
