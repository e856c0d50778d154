# Hosts with NVIDIA GPUs (pools[].gpu = nvidia, flake.nix: modulesFor): the datacenter driver of
# the pinned nixpkgs, the container toolkit so k3s' containerd has an `nvidia` runtime, a label
# and a taint so only GPU workloads land here. Unfree packages are allowed for exactly the NVIDIA
# ones, and only in this pool's system.
#
# Every option below is declared in nixpkgs' nixos/modules/hardware/video/nvidia.nix or
# services/hardware/nvidia-container-toolkit/default.nix (docs/nixos.md: how an option is checked
# before it is used); tests/nixlib/nixpkgs-options.nix restates those declarations.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.flakefleet;
  gpu = cfg.gpu;
  # Unfree NVIDIA packages by name (lib.getName), nothing else. The names are the derivations'
  # own (pkgs/os-specific/linux/nvidia-x11/): generic.nix names the driver `nvidia-dc-<version>`
  # when it ships the fabric manager (the data-center drivers) and `nvidia-x11-<version>`
  # otherwise; persistenced.nix and fabricmanager.nix have the pnames `nvidia-persistenced` and
  # `fabricmanager`; settings.nix `nvidia-settings`.
  nvidiaUnfree = [
    "nvidia-dc"
    "nvidia-x11"
    "nvidia-persistenced"
    "fabricmanager"
    "nvidia-settings"
  ];
in
{
  nixpkgs.config.allowUnfreePredicate = pkg: builtins.elem (lib.getName pkg) nvidiaUnfree;

  # nixpkgs has no `hardware.nvidia.enable`: the driver is switched on by naming it in
  # videoDrivers (its "X11" mode; this does not start X, services.xserver.enable stays false) or
  # by the Data Center mode, which also runs the fabric manager. The two exclude each other
  # (nvidia.nix asserts it). NVSwitch systems (p4d, p5, p6) need the fabric manager; on other GPUs
  # it would fail to start (there is no NVSwitch to manage) and fail the switch.
  services.xserver.videoDrivers = lib.optionals (!gpu.nvswitch) [ "nvidia" ];

  hardware.nvidia = {
    datacenter.enable = gpu.nvswitch;
    # The datacenter driver branch on x86_64: one CUDA compatibility line for the fleet. nixpkgs
    # builds its data-center drivers for x86_64 only (nvidia-x11/default.nix: the dc_* branches
    # carry no aarch64 hash), so aarch64 GPUs (Graviton g5g) take the production branch, which
    # has one.
    package = lib.mkDefault (
      if pkgs.stdenv.hostPlatform.isAarch64 then
        config.boot.kernelPackages.nvidiaPackages.stable
      else
        config.boot.kernelPackages.nvidiaPackages.dc
    );
    # Open kernel modules drive Turing and newer; older GPUs (M60, V100) need the closed ones.
    # nvidia.nix asks for an explicit choice on drivers >= 560 (its default is null there).
    open = lib.mkDefault gpu.openModules;
    # The data-center driver has no nvidia-settings (nvidia-x11/generic.nix: useSettings = false
    # makes `settings` an empty set, not a package), and a headless node has no use for a GUI.
    nvidiaSettings = lib.mkDefault false;
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
      BinaryName = "${lib.getOutput "tools" config.hardware.nvidia-container-toolkit.package}/bin/nvidia-container-runtime.cdi"
  '';

  services.k3s.nodeLabel = [ "nvidia.com/gpu.present=true" ];
  services.k3s.nodeTaint = [ "nvidia.com/gpu=present:NoSchedule" ];
}
