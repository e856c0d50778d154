{
  # The kernel settings the kubelet demands under --protect-kernel-defaults (roles/k3s.nix):
  # kubelet's setupKernelTunables (pkg/kubelet/cm/container_manager_linux.go) refuses to start
  # when any of these six differ, instead of silently changing them. The CIS values k3s'
  # hardening guide lists are the first four; the key quotas are needed as well.
  boot.kernel.sysctl = {
    "vm.overcommit_memory" = 1;
    "vm.panic_on_oom" = 0;
    "kernel.panic" = 10;
    "kernel.panic_on_oops" = 1;
    "kernel.keys.root_maxkeys" = 1000000;
    "kernel.keys.root_maxbytes" = 25000000;
  };
}
