{
  config,
  lib,
  pkgs,
  ...
}:
let
  ff = import ../lib;
  cfg = config.flakefleet;
  features = ff.clusterFeatures {
    inherit (cfg) cni;
    inherit (cfg.cilium) tunnel hubble;
  };
  jq = "${pkgs.jq}/bin/jq";
  # EC2 hosts sit behind security groups built from the same table; bring-your-own metal has
  # nothing in front of it, so there the firewall itself admits only the fleet to those ports.
  metal = cfg.hardware == "metal";
  # One accept rule per peer address for each rule only the fleet's nodes may reach (etcd, the
  # kubelet, the overlay). networking.firewall.extraCommands runs just before the final refuse
  # rule of the nixos-fw chain (nixpkgs services/networking/firewall-iptables.nix), so these
  # accept what would otherwise be refused. Without the peers file (before the first delivery)
  # they accept nothing: closed, not open.
  peerRule = rule: ''
    for addr in $(${jq} -r --argjson roles '${builtins.toJSON rule.sources}' '.[$roles[]] // [] | .[]' ${ff.paths.peers}); do
      iptables -w -A nixos-fw -p ${rule.protocol} -s "$addr" --dport ${rule.ports} -j nixos-fw-accept
    done
  '';
in
{
  networking.firewall = {
    enable = true;
    # The role's ports come from ports.json, the table the AWS security groups are built from,
    # with the rules of this cluster's CNI (flannel, or Cilium's tunnel, health and Hubble). On
    # metal, ports only nodes may reach are opened to the fleet's addresses below; the rest (SSH,
    # the API) to any source there, as their clients' addresses cannot be known on the host.
    inherit (if metal then ff.firewallOpenFor cfg.role features else ff.firewallFor cfg.role features)
      allowedTCPPortRanges
      allowedUDPPortRanges
      ;
    extraCommands = lib.optionalString metal ''
      if [ -s ${ff.paths.peers} ]; then
      ${lib.concatMapStrings peerRule (ff.peerRulesFor cfg.role features)}
      fi
    '';
    # Pod traffic enters through the CNI's devices; its network policy filters it, the host
    # firewall would only break pod-to-pod traffic.
    trustedInterfaces = ff.cniInterfaces.${cfg.cni};
  };
}
