{ config, lib, ... }:
{
  nix.settings = {
    experimental-features = [
      "nix-command"
      "flakes"
    ];
    # Closures arrive by `nix copy` from the deployer or from the stack's cache; only paths signed
    # by a trusted key are accepted, so a stolen SSH session alone cannot plant a system. The
    # trusted keys are the fleet's and cache.nixos.org's (nixpkgs' config/nix.nix always adds
    # the latter; it signs only what Hydra built from nixpkgs).
    require-sigs = true;
    trusted-public-keys = config.flakefleet.trustedPublicKeys;
  };
  # The stack's binary cache. Its URL names an S3 bucket Pulumi creates at deploy time, after this
  # system is evaluated, so delivery writes it next to the host's facts and nix.conf includes it;
  # `!include` skips a missing file (hosts that get their systems over SSH have none).
  nix.extraOptions = ''
    !include /etc/flakefleet/nix-cache.conf
  '';
  # Keep a month of generations: rollback needs the previous system to still be in the store.
  nix.gc = {
    automatic = lib.mkDefault true;
    dates = lib.mkDefault "weekly";
    options = lib.mkDefault "--delete-older-than 30d";
  };
  nix.optimise.automatic = lib.mkDefault true;
  system.stateVersion = lib.mkDefault "26.05";
}
