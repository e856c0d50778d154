# A cluster add-on, on the control planes of a cluster with autoscaled pools (flake.nix:
# roleModules): Kubernetes' cluster autoscaler, from its Helm chart through the HelmChart the
# control planes auto-deploy (services.k3s.manifests), finding the pools' Auto Scaling groups by
# their tags (components/autoscaling.py sets them). Chart and values as read in
# kubernetes/autoscaler charts/cluster-autoscaler (README's values table, templates/deployment.yaml).
{ config, lib, pkgs, ... }:
let
  cfg = config.flakefleet.clusterAutoscaler;
  # The autoscaler simulates the scheduler of its own Kubernetes minor: run the one of k3s'
  # (its releases start each minor at .0).
  parts = builtins.splitVersion config.services.k3s.package.version;
  tag = "v${builtins.elemAt parts 0}.${builtins.elemAt parts 1}.0";
  values = {
    cloudProvider = "aws";
    awsRegion = cfg.region;
    autoDiscovery.clusterName = config.flakefleet.cluster;
    image.tag = tag;
    # The control planes' instance role grants it the groups (flakefleet/plan/iam.py). The
    # instances' metadata service answers one hop only (hop limit 1, so that pods cannot borrow
    # a node's role): the autoscaler runs on the host network, where it is no hop away.
    hostNetwork = true;
    dnsPolicy = "ClusterFirstWithHostNet";
    # On a control plane (k3s labels servers node-role.kubernetes.io/control-plane), whatever
    # the label's value; tolerating the taint some clusters put there.
    affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms = [
      {
        matchExpressions = [
          {
            key = "node-role.kubernetes.io/control-plane";
            operator = "Exists";
          }
        ];
      }
    ];
    tolerations = [
      {
        key = "node-role.kubernetes.io/control-plane";
        operator = "Exists";
        effect = "NoSchedule";
      }
    ];
  };
in
lib.mkIf (cfg != null) {
  # The Nodes of instances their groups terminated (../host/flakefleet_node_gc.py): one pass a
  # minute (Restart=always also restarts a unit that exited cleanly, after RestartSec), with the
  # control plane's instance role (ec2:DescribeInstances, flakefleet/plan/iam.py).
  systemd.services.flakefleet-node-gc = {
    description = "Delete the Nodes of terminated autoscaled instances";
    wantedBy = [ "multi-user.target" ];
    after = [ "k3s.service" ];
    path = [ config.services.k3s.package ];
    serviceConfig = {
      ExecStart = "${import ../host { inherit pkgs; }}/bin/flakefleet-node-gc ${cfg.region}";
      Restart = "always";
      RestartSec = "60s";
    };
  };

  services.k3s.manifests.cluster-autoscaler.content = {
    apiVersion = "helm.cattle.io/v1";
    kind = "HelmChart";
    metadata = {
      name = "cluster-autoscaler";
      namespace = "kube-system";
    };
    spec = {
      repo = "https://kubernetes.github.io/autoscaler";
      chart = "cluster-autoscaler";
      version = "9.43.1";
      targetNamespace = "kube-system";
      valuesContent = builtins.toJSON values;
    };
  };
}
