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
  cp ${./flakefleet_drain.py} $out/share/flakefleet/flakefleet_drain.py
  cp ${./flakefleet_node_gc.py} $out/share/flakefleet/flakefleet_node_gc.py
  # The running system's programs (nix-store, systemctl, coreutils) first, as hostctl.sh does.
  cat > $out/bin/flakefleet-pull <<EOF
  #!${pkgs.runtimeShell}
  PATH=/run/current-system/sw/bin:\''${PATH:-/usr/bin:/bin}
  export PATH
  exec ${python}/bin/python3 $out/share/flakefleet/flakefleet_pull.py $out/share/flakefleet/hostctl.sh "\$@"
  EOF
  cat > $out/bin/flakefleet-drain <<EOF
  #!${pkgs.runtimeShell}
  exec ${python}/bin/python3 $out/share/flakefleet/flakefleet_drain.py "\$@"
  EOF
  cat > $out/bin/flakefleet-node-gc <<EOF
  #!${pkgs.runtimeShell}
  exec ${python}/bin/python3 $out/share/flakefleet/flakefleet_node_gc.py "\$@"
  EOF
  chmod +x $out/bin/flakefleet-pull $out/bin/flakefleet-drain $out/bin/flakefleet-node-gc
''
