{ config, lib, ... }:
let
  ff = import ../lib;
in
{
  networking.firewall = {
    enable = true;
    # The role's ports come from ports.json, the table the AWS security groups are built from.
    inherit (ff.firewallFor config.flakefleet.role) allowedTCPPortRanges allowedUDPPortRanges;
    # Pod traffic enters through the CNI bridge and the VXLAN device; k3s' network policy
    # controller filters it, the host firewall would only break pod-to-pod traffic.
    trustedInterfaces = [
      "cni0"
      "flannel.1"
    ];
  };
}
