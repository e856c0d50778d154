# An autoscaled pool (pools[].autoscaling): its instances pulled this system at first boot with
# the pull agent (../host), which is kept in the closure so that publishing the system to the
# binary cache publishes the agent the launch template names (flake.nix: lib.pullAgent).
{ pkgs, ... }:
{
  environment.systemPackages = [ (import ../host { inherit pkgs; }) ];
}
