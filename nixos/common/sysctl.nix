{
  # CIS Kubernetes benchmark values k3s expects; with --protect-kernel-defaults (roles/k3s.nix)
  # the kubelet refuses to start when they differ, instead of silently changing them.
  boot.kernel.sysctl = {
    "vm.overcommit_memory" = 1;
    "vm.panic_on_oom" = 0;
    "kernel.panic" = 10;
    "kernel.panic_on_oops" = 1;
  };
}
