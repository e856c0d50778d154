# The two nodes of the VM test (k3s-cluster.nix), kept apart so tests/test_nix_modules.py can
# evaluate them with nixpkgs' semantics in CI, together with what the test framework adds.
{ self, system }:
let
  ff = self.lib;
  # The test driver gives the N-th node (by name) 192.168.1.N on eth1.
  hosts = {
    cp0 = {
      address = "192.168.1.1";
      role = "control-plane";
      pool = "cp";
    };
    worker0 = {
      address = "192.168.1.2";
      role = "worker";
      pool = "workers";
    };
  };
  apiEndpoint = "https://${hosts.cp0.address}:6443";
  # The pool spec (flakefleet/plan/contract.py:PoolSpec, as flakefleet/plan/specs.py:pool_spec
  # fills it) of each node's pool; the keys left out take their defaults.
  spec = host: {
    cluster = "vmtest";
    inherit (host) pool role system;
    hardware = "metal";
    apiEndpoint = apiEndpoint;
    tlsSans = if host.role == "control-plane" then [ hosts.cp0.address ] else [ ];
    labels."flakefleet.io/pool" = host.pool;
    authorizedKeys = [ ];
    host = null;
  };
in
{
  inherit hosts apiEndpoint;
  # The host facts (flakefleet/plan/specs.py:host_facts): cp0 initializes the cluster.
  facts = name: {
    schema = 1;
    cluster = "vmtest";
    inherit name;
    inherit (hosts.${name}) pool role address;
    api_endpoint = apiEndpoint;
    init = name == "cp0";
    server = null;
  };
  nodes = builtins.mapAttrs (
    name: host:
    { lib, ... }:
    {
      imports = ff.roleModules (spec (host // { inherit system; }));
      # The test framework names each node (mkDefault); our shared closures leave the name to
      # the host facts (mkDefault ""). Both at the same priority would conflict: the node's
      # name wins here, and flakefleet-hostname sets the same name from the facts at runtime.
      networking.hostName = lib.mkOverride 900 name;
      virtualisation.memorySize = 2048;
      virtualisation.diskSize = 4096;
      # Nothing from the internet in a VM test: only the API server, controller and kubelet.
      services.k3s.disable = [
        "coredns"
        "local-storage"
        "metrics-server"
        "servicelb"
        "traefik"
      ];
    }
  ) hosts;
}
