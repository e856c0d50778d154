# Every node, whatever its role or hardware.
{
  imports = [
    ./flakefleet.nix
    ./nix.nix
    ./openssh.nix
    ./firewall.nix
    ./journald.nix
    ./sysctl.nix
    ./host-facts.nix
  ];
}
