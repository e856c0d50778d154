# The flakefleet options: what a pool's system is built from. Python's pool spec
# (flakefleet/nixos.py:pool_spec) sets them; everything per host lives outside the store.
{ lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.flakefleet = {
    cluster = mkOption {
      type = types.str;
      description = "Cluster name.";
    };
    pool = mkOption {
      type = types.str;
      description = "Pool this system is built for; every host of the pool runs it.";
    };
    role = mkOption {
      type = types.enum [
        "control-plane"
        "worker"
      ];
      description = "Kubernetes role of the pool's hosts: k3s server or agent.";
    };
    hardware = mkOption {
      type = types.enum [
        "ec2"
        "metal"
      ];
      description = "Where the hosts run: EC2 instances (virtual or *.metal) or bring-your-own machines.";
    };
    apiEndpoint = mkOption {
      type = types.str;
      example = "https://10.30.0.4:6443";
      description = "The Kubernetes API endpoint agents register with and servers join through.";
    };
    tlsSans = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra names and addresses in the API server certificate (the load balancer's).";
    };
    podCidr = mkOption {
      type = types.str;
      default = "10.42.0.0/16";
      description = "Pod network.";
    };
    serviceCidr = mkOption {
      type = types.str;
      default = "10.43.0.0/16";
      description = "Service network.";
    };
    k3sChannel = mkOption {
      type = types.str;
      default = "stable";
      description = "k3s release line: `stable` (nixpkgs' k3s) or `1.NN` (k3s_1_NN).";
    };
    labels = mkOption {
      type = types.attrsOf types.str;
      default = { };
      description = "Kubernetes node labels of the pool.";
    };
    taints = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "dedicated=metal:NoSchedule" ];
      description = "Kubernetes node taints of the pool, as `key=value:Effect`.";
    };
    authorizedKeys = mkOption {
      type = types.listOf types.str;
      description = "SSH public keys allowed to log in as root: the deploy key, so delivery keeps access.";
    };
    trustedPublicKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Nix signing keys whose store paths the host accepts (delivery signs every closure).";
    };
    host = mkOption {
      type = types.nullOr (types.attrsOf types.anything);
      default = null;
      description = "Host facts baked into the closure, for pools that opt into per-host closures; null shares one closure per pool.";
    };
  };
}
