# Opt-in (cluster.cni = cilium, flake.nix: roleModules): Cilium is this node's pod network. k3s
# runs without its flannel and network policy controller (the servers' flags; agents take the
# CNI the servers choose), and the kernel must have what Cilium's eBPF datapath needs. The
# control planes deploy Cilium itself (addons/cilium.nix).
{ config, lib, ... }:
let
  cfg = config.flakefleet;
  kernel = config.boot.kernelPackages.kernel;
  # What Cilium's eBPF datapath needs of the kernel (Cilium's system requirements).
  requiredKernelOptions = [
    "BPF"
    "BPF_SYSCALL"
    "BPF_JIT"
    "NET_CLS_BPF"
    "NET_SCH_INGRESS"
    "CGROUP_BPF"
    "CRYPTO_USER_API_HASH"
    "VXLAN"
    "GENEVE"
  ];
  missing = builtins.filter (o: !(kernel.config.isEnabled o)) requiredKernelOptions;
in
{
  assertions = [
    {
      assertion = lib.versionAtLeast kernel.version "5.10";
      message = "flakefleet: Cilium ${cfg.cilium.version} needs Linux 5.10 or newer; pool ${cfg.pool} boots ${kernel.version} (boot.kernelPackages)";
    }
    {
      assertion = missing == [ ];
      message = "flakefleet: Cilium needs kernel options ${lib.concatStringsSep ", " missing}, not enabled in pool ${cfg.pool}'s Linux ${kernel.version}";
    }
  ];

  services.k3s.extraFlags = lib.optionals (cfg.role == "control-plane") [
    "--flannel-backend=none"
    "--disable-network-policy"
  ];
}
