# The flakefleet options: what a pool's system is built from. Python's pool spec
# (flakefleet/plan/specs.py:pool_spec) sets them; everything per host lives outside the store.
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
    cni = mkOption {
      type = types.enum [
        "flannel"
        "cilium"
      ];
      default = "flannel";
      description = "The pod network: k3s' own flannel, or Cilium installed by the cluster (mixins/cilium.nix, addons/cilium.nix).";
    };
    cilium = {
      version = mkOption {
        type = types.strMatching "1\\.[0-9]{2}\\.[0-9]{1,2}";
        default = "1.18.4";
        description = "Cilium's Helm chart version (pinned; the cluster's helm controller fetches it).";
      };
      tunnel = mkOption {
        type = types.enum [
          "vxlan"
          "geneve"
        ];
        default = "vxlan";
        description = "Cilium's overlay between nodes.";
      };
      hubble = mkOption {
        type = types.bool;
        default = false;
        description = "Hubble flow visibility (server on every node, relay in the cluster).";
      };
    };
    gpu = mkOption {
      type = types.nullOr (
        types.submodule {
          options = {
            vendor = mkOption {
              type = types.enum [ "nvidia" ];
              description = "GPU vendor.";
            };
            openModules = mkOption {
              type = types.bool;
              default = true;
              description = "Whether NVIDIA's open kernel modules drive these GPUs (Turing and newer).";
            };
            nvswitch = mkOption {
              type = types.bool;
              default = false;
              description = "Whether the GPUs hang off NVSwitch (p4d, p5, p6): the fabric manager must run.";
            };
          };
        }
      );
      default = null;
      description = "The pool's GPUs (hardware/nvidia.nix), or null.";
    };
    clusterAutoscaler = mkOption {
      type = types.nullOr (
        types.submodule {
          options.region = mkOption {
            type = types.str;
            example = "eu-west-1";
            description = "The AWS region of the cluster's Auto Scaling groups.";
          };
        }
      );
      default = null;
      description = "Set when some pool of the cluster is autoscaled: control planes then run the cluster autoscaler (addons/cluster-autoscaler.nix).";
    };
    clusterHasGpus = mkOption {
      type = types.bool;
      default = false;
      description = "Whether some pool of the cluster has GPUs: control planes then deploy NVIDIA's device plugin.";
    };
    images = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "hello" ];
      description = "Workloads (nixos/workloads/) whose images this pool's nodes preload (services.k3s.images).";
    };
    workloads = mkOption {
      type = types.listOf (
        types.submodule {
          options = {
            name = mkOption {
              type = types.str;
              description = "A workload of nixos/workloads/.";
            };
            pools = mkOption {
              type = types.listOf types.str;
              description = "Pools that preload its image and run its pods.";
            };
            gpuPools = mkOption {
              type = types.listOf types.str;
              default = [ ];
              description = "Those of `pools` that have GPUs (its pods tolerate their taint).";
            };
            replicas = mkOption {
              type = types.ints.unsigned;
              default = 1;
              description = "Pods to run.";
            };
          };
        }
      );
      default = [ ];
      description = "Workloads the control planes deploy (services.k3s.manifests).";
    };
    host = mkOption {
      type = types.nullOr (types.attrsOf types.anything);
      default = null;
      description = "Host facts baked into the closure, for pools that opt into per-host closures; null shares one closure per pool.";
    };
  };
}
