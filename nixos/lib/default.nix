# flakefleet's own Nix functions. Builtins only, no nixpkgs: they evaluate offline and are
# tested with plain `nix-instantiate --eval` (tests/test_nixos.py).
let
  # The port table shared with the AWS security groups (see ports.json).
  portTable = builtins.fromJSON (builtins.readFile ../ports.json);

  # A rule applies when the cluster has every feature its `when` lists (no `when`: always).
  applies = features: r: builtins.all (f: builtins.elem f features) (r.when or [ ]);

  roles = [
    "control-plane"
    "worker"
  ];
  # A rule only the fleet's own nodes may reach (etcd, kubelet, the overlay): every source is a
  # role. The others (SSH from the admins, the API from kubectl and the load balancer) come from
  # addresses a host cannot know, so they stay open to any source, as before.
  peersOnly = r: builtins.all (source: builtins.elem source roles) r.sources;

  rulesFor =
    role: features: protocol:
    builtins.filter (r: builtins.elem role r.targets && r.protocol == protocol && applies features r) portTable.rules;

  asRanges = map (r: {
    from = r.from_port;
    to = r.to_port;
  });
in
rec {
  inherit portTable;

  # The pool spec's schema (flakefleet/plan/schema.py emits it): `options`, the keys that set
  # `flakefleet.*` options (nixos/common/flakefleet.nix declares them from it), and `selects`,
  # the keys that choose modules.
  specSchema = builtins.fromJSON (builtins.readFile ../common/spec-schema.json);

  # The features port rules are conditioned on (flakefleet/facts/ports.py:cluster_features computes
  # the same): the CNI, and for Cilium its tunnel and whether Hubble runs.
  clusterFeatures =
    { cni, tunnel ? "vxlan", hubble ? false }:
    if cni != "cilium" then [ cni ] else [ "cilium" tunnel ] ++ (if hubble then [ "hubble" ] else [ ]);

  # role, cluster features -> the NixOS firewall ranges that role's hosts open, in table order
  # (on EC2, where the security groups built from the same table restrict the sources).
  firewallFor = role: features: {
    allowedTCPPortRanges = asRanges (rulesFor role features "tcp");
    allowedUDPPortRanges = asRanges (rulesFor role features "udp");
  };

  # The same without the rules only nodes may reach (on bring-your-own metal, which has no
  # security group: those are opened to the fleet's addresses, peerRulesFor).
  firewallOpenFor = role: features: {
    allowedTCPPortRanges = asRanges (builtins.filter (r: !(peersOnly r)) (rulesFor role features "tcp"));
    allowedUDPPortRanges = asRanges (builtins.filter (r: !(peersOnly r)) (rulesFor role features "udp"));
  };

  # role, cluster features -> the rules whose sources are all node roles, as
  # { protocol, ports = "from:to", sources }: opened only to the addresses of those roles' hosts,
  # read at firewall start from paths.peers (nixos/common/firewall.nix).
  peerRulesFor =
    role: features:
    map (r: {
      inherit (r) protocol sources;
      ports = "${toString r.from_port}:${toString r.to_port}";
    }) (builtins.filter peersOnly (rulesFor role features "tcp" ++ rulesFor role features "udp"));

  # Interfaces pod traffic arrives on, per CNI: the host firewall trusts them (the CNI's own
  # network policy filters pod traffic; the host firewall would only break it).
  cniInterfaces = {
    flannel = [
      "cni0"
      "flannel.1"
    ];
    cilium = [
      "cilium_host"
      "cilium_net"
      "cilium_vxlan"
      "cilium_geneve"
      "lxc+"
    ];
  };

  # { key = value; } -> [ "key=value" ] for k3s' --node-label.
  nodeLabels = labels: map (k: "${k}=${labels.${k}}") (builtins.attrNames labels);

  # Host facts (the schema of /etc/flakefleet/host.json) -> this host's k3s config drop-in.
  # Must match flakefleet/plan/specs.py:k3s_host_config; a test compares the two. Total: null facts
  # (a shared pool closure, which learns its host at runtime) give nothing.
  k3sHostConfig =
    facts:
    if facts == null then
      { }
    else
      {
        "node-name" = facts.name;
        "node-ip" = facts.address;
      }
      // (
        if facts.role != "control-plane" then
          { }
        else if facts.init then
          { "cluster-init" = true; }
        else
          { server = facts.server; }
      );

  # The same facts as nixpkgs' services.k3s options, for per-host closures (mixins/per-host.nix):
  # each drop-in key renamed to the option that renders the same k3s flag. Total like
  # k3sHostConfig, which matters: the module system evaluates it for shared closures too.
  k3sHostOptions =
    facts:
    let
      config = k3sHostConfig facts;
      option = {
        "node-name" = "nodeName";
        "node-ip" = "nodeIP";
        "cluster-init" = "clusterInit";
        server = "serverAddr";
      };
    in
    builtins.listToAttrs (
      map (key: {
        name = option.${key};
        value = config.${key};
      }) (builtins.attrNames config)
    );

  # The assertion that every workload `names` lists is one of nixos/workloads/ (`workloads`).
  workloadsExist = workloads: names: {
    assertion = builtins.all (n: workloads ? ${n}) names;
    message = "flakefleet: no workload ${
      builtins.concatStringsSep ", " (builtins.filter (n: !(workloads ? ${n})) names)
    } in nixos/workloads/ (it has: ${builtins.concatStringsSep ", " (builtins.attrNames workloads)})";
  };

  # k3s package attribute for a channel: "stable" -> k3s, "1.33" -> k3s_1_33.
  k3sAttr =
    channel: if channel == "stable" then "k3s" else "k3s_" + builtins.replaceStrings [ "." ] [ "_" ] channel;

  # The k3s package of a channel from the pinned nixpkgs; a channel it does not have is named in
  # one line with the ones it has (nixpkgs keeps k3s_1_NN only for maintained minors).
  k3sPackage =
    pkgs: channel:
    let
      attr = k3sAttr channel;
      have = builtins.filter (n: builtins.match "k3s_1_[0-9]+" n != null) (builtins.attrNames pkgs);
    in
    if pkgs ? ${attr} then
      pkgs.${attr}
    else
      throw "flakefleet:cluster.k3s_channel: ${channel}: the pinned nixpkgs has no ${attr} (it has: ${builtins.concatStringsSep ", " have})";

  # Where delivery writes what the shared pool closure reads at runtime (never the store).
  paths = {
    facts = "/etc/flakefleet/host.json";
    # { "<role>": [ address... ] }: the fleet's hosts per role (delivery writes it when they change).
    peers = "/etc/flakefleet/peers.json";
    k3sDropIn = "/etc/rancher/k3s/config.yaml.d/50-flakefleet-host.yaml";
    secrets = "/var/lib/flakefleet/secrets";
  };
}
