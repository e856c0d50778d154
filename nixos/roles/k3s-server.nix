# A Kubernetes control plane: k3s server on embedded etcd (HA). Whether this host initializes
# the cluster or joins it is a host fact (the k3s drop-in), not part of the shared closure.
{ config, lib, ... }:
let
  ff = import ../lib;
  cfg = config.flakefleet;
in
{
  imports = [ ./k3s.nix ];

  services.k3s = {
    role = "server";
    # Tokens only through files outside the store; `token` would land world-readable in it.
    tokenFile = "${ff.paths.secrets}/k3s-server-token";
    agentTokenFile = "${ff.paths.secrets}/k3s-agent-token";
    extraFlags = [
      "--cluster-cidr=${cfg.podCidr}"
      "--service-cidr=${cfg.serviceCidr}"
      # CIS: encrypt Secrets at rest in etcd.
      "--secrets-encryption"
      "--write-kubeconfig-mode=0600"
    ]
    ++ map (san: "--tls-san=${san}") cfg.tlsSans;
  };
}
