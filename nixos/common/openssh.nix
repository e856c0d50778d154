{ config, lib, ... }:
{
  services.openssh = {
    enable = true;
    # Port 22 is opened by firewall.nix from ports.json, like every other port.
    openFirewall = false;
    # Only the ed25519 key the stack pinned (metal) or generated and installed at first boot
    # (EC2); no other host key is created, so the deployer's known_hosts stays true.
    hostKeys = [
      {
        path = "/etc/ssh/ssh_host_ed25519_key";
        type = "ed25519";
      }
    ];
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = lib.mkDefault "prohibit-password";
    };
  };
  users.users.root.openssh.authorizedKeys.keys = config.flakefleet.authorizedKeys;
}
