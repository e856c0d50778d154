# The example workload: a static page served by darkhttpd, in a layered image built by Nix
# (reproducible: the same flake lock gives the same image, tagged by its content).
{ pkgs, lib }:
let
  port = 8080;
  page = pkgs.writeTextDir "srv/index.html" ''
    <!doctype html>
    <title>flakefleet</title>
    <p>Hello from an image built by Nix and preloaded on this node.</p>
  '';
  image = pkgs.dockerTools.buildLayeredImage {
    name = "flakefleet/hello";
    contents = [ page ];
    config = {
      Cmd = [
        "${pkgs.darkhttpd}/bin/darkhttpd"
        "/srv"
        "--port"
        (toString port)
      ];
      ExposedPorts."${toString port}/tcp" = { };
      # nobody: the server needs no privilege.
      User = "65534:65534";
    };
  };
  labels = {
    "app.kubernetes.io/name" = "hello";
    "app.kubernetes.io/managed-by" = "flakefleet";
  };
in
{
  inherit image;
  manifests = placement: [
    {
      apiVersion = "apps/v1";
      kind = "Deployment";
      metadata = {
        name = "hello";
        namespace = "default";
        inherit labels;
      };
      spec = {
        inherit (placement) replicas;
        selector.matchLabels = labels;
        template = {
          metadata.labels = labels;
          spec = {
            # Only where the image was preloaded.
            affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms = [
              {
                matchExpressions = [
                  {
                    key = "flakefleet.io/pool";
                    operator = "In";
                    values = placement.pools;
                  }
                ];
              }
            ];
            tolerations = lib.optional (placement.gpuPools != [ ]) {
              key = "nvidia.com/gpu";
              operator = "Exists";
              effect = "NoSchedule";
            };
            securityContext = {
              runAsNonRoot = true;
              runAsUser = 65534;
            };
            containers = [
              {
                name = "hello";
                image = "${image.imageName}:${image.imageTag}";
                # Preloaded by containerd at k3s start: never pulled from a registry.
                imagePullPolicy = "Never";
                ports = [
                  {
                    containerPort = port;
                    name = "http";
                  }
                ];
                readinessProbe.httpGet = {
                  path = "/";
                  port = "http";
                };
                securityContext = {
                  allowPrivilegeEscalation = false;
                  readOnlyRootFilesystem = true;
                  capabilities.drop = [ "ALL" ];
                };
              }
            ];
          };
        };
      };
    }
    {
      apiVersion = "v1";
      kind = "Service";
      metadata = {
        name = "hello";
        namespace = "default";
        inherit labels;
      };
      spec = {
        selector = labels;
        ports = [
          {
            name = "http";
            port = 80;
            targetPort = "http";
          }
        ];
      };
    }
  ];
}
