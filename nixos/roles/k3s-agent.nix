# A Kubernetes worker: k3s agent joining through the API endpoint.
{ config, ... }:
let
  ff = import ../lib;
in
{
  imports = [ ./k3s.nix ];

  services.k3s = {
    role = "agent";
    # The same for every agent of the cluster, so it may live in the shared closure.
    serverAddr = config.flakefleet.apiEndpoint;
    tokenFile = "${ff.paths.secrets}/k3s-agent-token";
  };
}
