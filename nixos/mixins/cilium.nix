# Cilium as the pod network (flakefleet.cni = "cilium"): k3s without its flannel and network
# policy controller, and Cilium installed by the cluster itself from a HelmChart the control
# planes auto-deploy (services.k3s.manifests). The chart version is pinned; the cluster's helm
# controller fetches it and Cilium's images, so the cluster needs egress to helm.cilium.io and
# quay.io (or a mirror) when it is built.
{ config, lib, ... }:
let
  cfg = config.flakefleet;
  server = cfg.role == "control-plane";
  kernel = config.boot.kernelPackages.kernel;
  # https://host:port of the API endpoint: Cilium must reach the API before pod networking works.
  api = builtins.match "https://([^:/]+):([0-9]+)" cfg.apiEndpoint;
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
  values = {
    ipam = {
      mode = "cluster-pool";
      operator = {
        clusterPoolIPv4PodCIDRList = [ cfg.podCidr ];
        # One /24 per node, as k3s' own allocator would (flakefleet/config/cluster.py checks the fit).
        clusterPoolIPv4MaskSize = 24;
      };
    };
    routingMode = "tunnel";
    tunnelProtocol = cfg.cilium.tunnel;
    # k3s keeps its kube-proxy; Cilium talks to the API directly until services work.
    kubeProxyReplacement = false;
    k8sServiceHost = builtins.elemAt api 0;
    k8sServicePort = lib.toInt (builtins.elemAt api 1);
    # k3s' containerd reads CNI configuration and plugins from its own directories.
    cni = {
      binPath = "/var/lib/rancher/k3s/data/cni";
      confPath = "/var/lib/rancher/k3s/agent/etc/cni/net.d";
    };
    hubble = {
      enabled = cfg.cilium.hubble;
      relay.enabled = cfg.cilium.hubble;
    };
  };
in
lib.mkIf (cfg.cni == "cilium") {
  assertions = [
    {
      assertion = api != null;
      message = "flakefleet: Cilium needs the API endpoint as https://host:port, not ${cfg.apiEndpoint}";
    }
    {
      assertion = lib.versionAtLeast kernel.version "5.10";
      message = "flakefleet: Cilium ${cfg.cilium.version} needs Linux 5.10 or newer; pool ${cfg.pool} boots ${kernel.version} (boot.kernelPackages)";
    }
    {
      assertion = missing == [ ];
      message = "flakefleet: Cilium needs kernel options ${lib.concatStringsSep ", " missing}, not enabled in pool ${cfg.pool}'s Linux ${kernel.version}";
    }
  ];

  # Server flags only: agents take the CNI the servers choose.
  services.k3s.extraFlags = lib.optionals server [
    "--flannel-backend=none"
    "--disable-network-policy"
  ];

  services.k3s.manifests = lib.mkIf server {
    cilium.content = {
      apiVersion = "helm.cattle.io/v1";
      kind = "HelmChart";
      metadata = {
        name = "cilium";
        namespace = "kube-system";
      };
      spec = {
        repo = "https://helm.cilium.io/";
        chart = "cilium";
        inherit (cfg.cilium) version;
        targetNamespace = "kube-system";
        # Runs on the host network before any CNI exists, as a CNI's installer must.
        bootstrap = true;
        valuesContent = builtins.toJSON values;
      };
    };
  };
}
