# Hosts with NVIDIA GPUs (pools[].gpu = nvidia, flake.nix: modulesFor): the datacenter driver of the pinned nixpkgs,
# the container toolkit so k3s' containerd has an `nvidia` runtime, a label and a taint so only
# GPU workloads land here. Unfree packages are allowed for exactly the NVIDIA ones, and only in
# this pool's system.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.flakefleet;
  gpu = cfg.gpu;
  # Unfree NVIDIA packages by name (lib.getName), nothing else.
  nvidiaUnfree = [
    "nvidia-x11"
    "nvidia-persistenced"
    "nvidia-fabricmanager"
    "nvidia-settings"
  ];
in
{
  nixpkgs.config.allowUnfreePredicate = pkg: builtins.elem (lib.getName pkg) nvidiaUnfree;

  hardware.nvidia = {
    # NVSwitch systems (p4d, p5, p6) need the fabric manager: the Data Center mode runs it. Others
    # get the same datacenter driver branch without it (the two modes exclude each other).
    datacenter.enable = gpu.nvswitch;
    enable = !gpu.nvswitch;
    package = lib.mkDefault config.boot.kernelPackages.nvidiaPackages.dc;
    # Open kernel modules drive Turing and newer; older GPUs (M60, V100) need the closed ones.
    open = lib.mkDefault gpu.openModules;
    # Keep the driver loaded between jobs: no re-initialisation on every pod start.
    nvidiaPersistenced = lib.mkDefault true;
  };

  # CDI specs for the GPUs (/var/run/cdi), read by the runtime below.
  hardware.nvidia-container-toolkit.enable = true;

  # containerd's `nvidia` runtime, injecting the GPUs through CDI; pods ask for it with
  # runtimeClassName: nvidia (the RuntimeClass is deployed with the device plugin, roles/).
  services.k3s.containerdConfigTemplate = ''
    {{ template "base" . }}

    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia.options]
      BinaryName = "${lib.getOutput "tools" pkgs.nvidia-container-toolkit}/bin/nvidia-container-runtime.cdi"
  '';

  services.k3s.nodeLabel = [ "nvidia.com/gpu.present=true" ];
  services.k3s.nodeTaint = [ "nvidia.com/gpu=present:NoSchedule" ];
}
