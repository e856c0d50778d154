# The pull agent of autoscaled pools (pools[].autoscaling): flakefleet_pull.py with hostctl.sh,
# the same host side pushed hosts get over SSH. An instance's user data realises this path from
# the stack's binary cache and runs bin/flakefleet-pull (flakefleet/pull/userdata.py); it is
# in the pool's system closure too (mixins/pull.nix), so publishing the system publishes it.
{ pkgs }:
let
  # boto3: IMDSv2 credentials, SigV4, S3, SSM and Auto Scaling as AWS' own SDK does them;
  # cryptography: the pointer's Ed25519 signature.
  python = pkgs.python3.withPackages (ps: [
    ps.boto3
    ps.cryptography
  ]);
in
pkgs.runCommand "flakefleet-pull" { } ''
  mkdir -p $out/bin $out/share/flakefleet
  cp ${./hostctl.sh} $out/share/flakefleet/hostctl.sh
  cp ${./flakefleet_pull.py} $out/share/flakefleet/flakefleet_pull.py
  # The running system's programs (nix-store, systemctl, coreutils) first, as hostctl.sh does.
  cat > $out/bin/flakefleet-pull <<EOF
  #!${pkgs.runtimeShell}
  PATH=/run/current-system/sw/bin:\''${PATH:-/usr/bin:/bin}
  export PATH
  exec ${python}/bin/python3 $out/share/flakefleet/flakefleet_pull.py $out/share/flakefleet/hostctl.sh "\$@"
  EOF
  chmod +x $out/bin/flakefleet-pull
''
