{ config, lib, ... }:
let
  ff = import ../lib;
  cfg = config.flakefleet;
  features = ff.clusterFeatures {
    inherit (cfg) cni;
    inherit (cfg.cilium) tunnel hubble;
  };
in
{
  networking.firewall = {
    enable = true;
    # The role's ports come from ports.json, the table the AWS security groups are built from,
    # with the rules of this cluster's CNI (flannel, or Cilium's tunnel, health and Hubble).
    inherit (ff.firewallFor cfg.role features) allowedTCPPortRanges allowedUDPPortRanges;
    # Pod traffic enters through the CNI's devices; its network policy filters it, the host
    # firewall would only break pod-to-pod traffic.
    trustedInterfaces = ff.cniInterfaces.${cfg.cni};
  };
}
