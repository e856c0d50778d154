# A shared pool closure learns who it is at runtime from /etc/flakefleet/host.json, which
# delivery writes over SSH. Hosts with per-host closures get the file from the closure.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  ff = import ../lib;
in
{
  # The hostname comes from the facts file, not the closure (all hosts of a pool share it).
  networking.hostName = lib.mkDefault "";

  systemd.services.flakefleet-hostname = {
    description = "Set the hostname from flakefleet's host facts";
    wantedBy = [ "multi-user.target" ];
    before = [ "k3s.service" ];
    unitConfig.ConditionPathExists = ff.paths.facts;
    serviceConfig.Type = "oneshot";
    # Active after it ran, so that `systemctl try-restart` (delivery, when the facts change) and
    # switch-to-configuration (which only touches active units) run it again.
    serviceConfig.RemainAfterExit = true;
    script = ''
      ${pkgs.hostname}/bin/hostname "$(${pkgs.jq}/bin/jq -r .name ${ff.paths.facts})"
    '';
  };

  # Secrets (k3s tokens) are written by delivery, mode 0600, never into the store.
  systemd.tmpfiles.rules = [ "d ${ff.paths.secrets} 0700 root root -" ];
}
