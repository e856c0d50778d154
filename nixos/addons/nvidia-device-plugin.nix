# A cluster add-on, on the control planes of a cluster with GPU pools (flake.nix: roleModules):
# NVIDIA's device plugin (GPUs as the `nvidia.com/gpu` resource) on the GPU nodes only, and the
# `nvidia` RuntimeClass whose handler is the containerd runtime hardware/nvidia.nix adds.
{ ... }:
let
  version = "v0.17.4";
in
{
  services.k3s.manifests.nvidia-device-plugin.content = [
    {
      apiVersion = "node.k8s.io/v1";
      kind = "RuntimeClass";
      metadata.name = "nvidia";
      handler = "nvidia";
    }
    {
      apiVersion = "apps/v1";
      kind = "DaemonSet";
      metadata = {
        name = "nvidia-device-plugin";
        namespace = "kube-system";
      };
      spec = {
        selector.matchLabels.name = "nvidia-device-plugin";
        updateStrategy.type = "RollingUpdate";
        template = {
          metadata.labels.name = "nvidia-device-plugin";
          spec = {
            runtimeClassName = "nvidia";
            priorityClassName = "system-node-critical";
            nodeSelector."nvidia.com/gpu.present" = "true";
            tolerations = [
              {
                key = "nvidia.com/gpu";
                operator = "Exists";
                effect = "NoSchedule";
              }
            ];
            containers = [
              {
                name = "nvidia-device-plugin";
                image = "nvcr.io/nvidia/k8s-device-plugin:${version}";
                env = [
                  {
                    name = "NVIDIA_VISIBLE_DEVICES";
                    value = "all";
                  }
                  {
                    name = "FAIL_ON_INIT_ERROR";
                    value = "false";
                  }
                ];
                securityContext = {
                  allowPrivilegeEscalation = false;
                  capabilities.drop = [ "ALL" ];
                };
                volumeMounts = [
                  {
                    name = "device-plugin";
                    mountPath = "/var/lib/kubelet/device-plugins";
                  }
                ];
              }
            ];
            volumes = [
              {
                name = "device-plugin";
                hostPath.path = "/var/lib/kubelet/device-plugins";
              }
            ];
          };
        };
      };
    }
  ];
}
