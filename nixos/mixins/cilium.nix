# Opt-in (cluster.cni = cilium, flake.nix: roleModules): Cilium is this node's pod network. k3s
# runs without its flannel and network policy controller (the servers' flags; agents take the
# CNI the servers choose), and the kernel must have what Cilium's eBPF datapath needs. The
# control planes deploy Cilium itself (addons/cilium.nix).
{ config, lib, ... }:
let
  cfg = config.flakefleet;
  kernel = config.boot.kernelPackages.kernel;
in
{
  assertions = [
    {
      assertion = lib.versionAtLeast kernel.version "5.10";
      message = "flakefleet: Cilium ${cfg.cilium.version} needs Linux 5.10 or newer; pool ${cfg.pool} boots ${kernel.version} (boot.kernelPackages)";
    }
  ];

  # What Cilium's eBPF datapath needs of the kernel (Cilium's system requirements), said the
  # NixOS way: nixos/modules/system/boot/kernel.nix checks system.requiredKernelConfig against
  # the kernel's configuration. It does so for kernels without `features`, the ones whose
  # configuration can be read at evaluation time (a custom `linuxManualConfig` kernel); nixpkgs'
  # own kernels are "assumed to have all required features" (their common-config.nix enables
  # these), and their `config.isEnabled` knows only MODULES, FW_LOADER and RUST while evaluating
  # (pkgs/os-specific/linux/kernel/generic.nix), so asking it directly would fail on every one.
  system.requiredKernelConfig = map config.lib.kernelConfig.isEnabled [
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

  services.k3s.extraFlags = lib.optionals (cfg.role == "control-plane") [
    "--flannel-backend=none"
    "--disable-network-policy"
  ];
}
