{ lib, ... }:
{
  # Bound the journal so a chatty pod cannot fill the root volume.
  services.journald.extraConfig = lib.mkDefault ''
    SystemMaxUse=1G
    MaxRetentionSec=1month
  '';
}
