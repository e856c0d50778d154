# Opt-in (pools[].per_host_closures, flake.nix: roleModules): bake the host facts into the
# closure instead of reading them at runtime. One evaluation and one build per host instead of
# per pool.
{ config, ... }:
let
  ff = import ../lib;
  host = config.flakefleet.host;
in
{
  networking.hostName = host.name;
  environment.etc."flakefleet/host.json".text = builtins.toJSON host;
  # nodeName, nodeIP, and clusterInit (the first server) or serverAddr (the others).
  services.k3s = ff.k3sHostOptions host;
}
