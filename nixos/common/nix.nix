{ config, lib, ... }:
{
  nix.settings = {
    experimental-features = [
      "nix-command"
      "flakes"
    ];
    # Closures arrive by `nix copy` from the deployer; only paths signed by the fleet's key are
    # accepted, so a stolen SSH session alone cannot plant a system.
    require-sigs = true;
    trusted-public-keys = config.flakefleet.trustedPublicKeys;
  };
  # Keep a month of generations: rollback needs the previous system to still be in the store.
  nix.gc = {
    automatic = lib.mkDefault true;
    dates = lib.mkDefault "weekly";
    options = lib.mkDefault "--delete-older-than 30d";
  };
  nix.optimise.automatic = lib.mkDefault true;
  system.stateVersion = lib.mkDefault "26.05";
}
