# A cluster add-on, on the control planes of a Cilium cluster (flake.nix: roleModules): Cilium
# installed by the cluster itself from a HelmChart the control planes auto-deploy
# (services.k3s.manifests). The chart version is pinned; the cluster's helm controller fetches
# it and Cilium's images, so the cluster needs egress to helm.cilium.io and quay.io (or a
# mirror) when it is built. The nodes' side is mixins/cilium.nix.
{ config, lib, ... }:
let
  cfg = config.flakefleet;
  # https://host:port of the API endpoint: Cilium must reach the API before pod networking works.
  api = builtins.match "https://([^:/]+):([0-9]+)" cfg.apiEndpoint;
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
{
  assertions = [
    {
      assertion = api != null;
      message = "flakefleet: Cilium needs the API endpoint as https://host:port, not ${cfg.apiEndpoint}";
    }
  ];

  services.k3s.manifests.cilium.content = {
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
}
