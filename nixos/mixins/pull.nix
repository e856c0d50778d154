# An autoscaled pool (pools[].autoscaling): its instances pulled this system at first boot with
# the pull agent (../host), which is kept in the closure so that publishing the system publishes
# the agent the launch template names (flake.nix: lib.pullAgent).
{ config, pkgs, ... }:
let
  agent = import ../host { inherit pkgs; };
in
{
  environment.systemPackages = [ agent ];

  # Before the group terminates this instance (its termination hook, flakefleet-drain), evict
  # its pods with the kubelet's own credentials (../host/flakefleet_drain.py).
  systemd.services.flakefleet-drain = {
    description = "Drain this node before its Auto Scaling group terminates it";
    wantedBy = [ "multi-user.target" ];
    after = [ "k3s.service" ];
    # Only on an instance the pull agent set up (the user data writes this file).
    unitConfig.ConditionPathExists = "/etc/flakefleet/pull.json";
    # A unit's PATH holds only NixOS' defaults: k3s (for `k3s kubectl`) must be named.
    path = [ config.services.k3s.package ];
    serviceConfig = {
      ExecStart = "${agent}/bin/flakefleet-drain /etc/flakefleet/pull.json";
      Restart = "on-failure";
      RestartSec = "5s";
    };
  };
}
