# A real two-node cluster from our own modules, in NixOS VMs (nixpkgs' testers.runNixOSTest;
# `nix flake check` on x86_64-linux with KVM, run by the pull-request workflow).
#
# Each node runs the *shared* closure of its pool, exactly as delivered: nothing about the host
# is in the store. The test script then stages what delivery stages — the host facts, the k3s
# drop-in and the token files (0600, outside the store) — starts k3s, and waits until both
# Nodes are Ready. k3s must not start before that: its unit asserts the staged files.
{ pkgs, self }:
let
  ff = self.lib;
  cluster = import ./k3s-cluster-nodes.nix {
    inherit self;
    inherit (pkgs.stdenv.hostPlatform) system;
  };
  inherit (cluster) facts;
  factsFile = name: pkgs.writeText "${name}-host.json" (builtins.toJSON (facts name));
  # JSON is YAML: the drop-in k3s reads, as delivery writes it.
  dropInFile = name: pkgs.writeText "${name}-k3s.yaml" (builtins.toJSON (ff.k3sHostConfig (facts name)));
  stage = name: tokens: ''
    ${name}.wait_for_unit("multi-user.target")
    ${name}.fail("systemctl is-active k3s")  # asserted files missing: k3s waits for delivery
    ${name}.succeed(
        "install -D -m 0644 ${factsFile name} ${ff.paths.facts}",
        "install -D -m 0644 ${dropInFile name} ${ff.paths.k3sDropIn}",
        "install -d -m 0700 ${ff.paths.secrets}",
        ${builtins.concatStringsSep "\n        " (map (t: ''"umask 077; printf %s ${t.value} > ${ff.paths.secrets}/${t.file}",'') tokens)}
    )
    ${name}.succeed("systemctl start flakefleet-hostname")
    ${name}.succeed("systemctl start --no-block k3s")
  '';
  serverSecret = {
    file = "k3s-server-token";
    value = "vmtest-server-token";
  };
  agentSecret = {
    file = "k3s-agent-token";
    value = "vmtest-agent-token";
  };
in
pkgs.testers.runNixOSTest {
  name = "flakefleet-k3s-cluster";
  inherit (cluster) nodes;
  testScript = ''
    start_all()
    ${stage "cp0" [
      serverSecret
      agentSecret
    ]}
    cp0.wait_for_unit("k3s")
    ${stage "worker0" [ agentSecret ]}
    cp0.wait_until_succeeds(
        "k3s kubectl wait --for=condition=Ready node/cp0 node/worker0 --timeout=10s", timeout=900
    )
    labels = cp0.succeed("k3s kubectl get nodes -L flakefleet.io/pool --no-headers")
    assert "workers" in labels and "cp" in labels, labels
    worker0.succeed("test \"$(hostname)\" = worker0")
    worker0.succeed("test \"$(stat -c %a ${ff.paths.secrets}/k3s-agent-token)\" = 600")
  '';
}
