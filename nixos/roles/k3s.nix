# What every k3s node shares, server or agent.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  ff = import ../lib;
  cfg = config.flakefleet;
in
{
  services.k3s = {
    enable = true;
    package = lib.mkDefault (ff.k3sPackage pkgs cfg.k3sChannel);
    nodeLabel = ff.nodeLabels cfg.labels;
    nodeTaint = cfg.taints;
    # Drain pods cleanly when the host shuts down (rolling reboots, spot reclaim).
    gracefulNodeShutdown.enable = lib.mkDefault true;
    # CIS: refuse to start rather than silently change the sysctls of common/sysctl.nix.
    extraFlags = [ "--protect-kernel-defaults" ];
  };

  # A shared closure does not know its host: k3s must not start until delivery has written
  # this host's facts (node name, address, join mode) and its token.
  systemd.services.k3s.unitConfig.AssertPathExists =
    lib.optional (cfg.host == null) ff.paths.k3sDropIn ++ [ config.services.k3s.tokenFile ];

  environment.systemPackages = [ pkgs.jq ];
}
