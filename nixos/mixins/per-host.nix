# Opt-in (pools[].per_host_closures): bake the host facts into the closure instead of
# reading them at runtime. One evaluation and one build per host instead of per pool.
{ config, lib, ... }:
let
  ff = import ../lib;
  host = config.flakefleet.host;
in
lib.mkIf (host != null) {
  networking.hostName = host.name;
  environment.etc."flakefleet/host.json".text = builtins.toJSON host;
  # JSON is YAML: k3s reads this drop-in like the one delivery writes for shared closures.
  environment.etc."rancher/k3s/config.yaml.d/50-flakefleet-host.yaml".text = builtins.toJSON (
    ff.k3sHostConfig host
  );
}
