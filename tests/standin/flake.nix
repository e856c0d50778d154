# A stand-in for nixos/ with the same interface (`lib.toplevel spec`), whose systems build
# offline with builder = /bin/sh and no nixpkgs. Its switch-to-configuration follows the
# NixOS contract closely enough for delivery tests.
{
  description = "flakefleet test stand-in: NixOS-shaped systems that build offline";

  outputs =
    { self }:
    {
      lib.toplevel =
        spec:
        assert spec.schema == 1;
        derivation {
          name = "nixos-system-${spec.pool}${if spec.host == null then "" else "-" + spec.host.name}";
          system = spec.system;
          builder = "/bin/sh";
          # Builders start with no PATH; the host's coreutils are all a stand-in needs.
          PATH = "/usr/bin:/bin";
          # The whole spec is an input: any change to it is a new system, as with the real flake.
          specJson = builtins.toJSON spec;
          switchScript = builtins.readFile ./switch-to-configuration.sh;
          # Benchmarks only: a payload of this many KiB, so copies move real bytes.
          payloadKib = toString (spec.standin_payload_kib or 0);
          args = [
            "-c"
            ''
              set -e
              mkdir -p $out/bin
              printf '%s' "$specJson" > $out/spec.json
              printf '%s\n' "flakefleet-standin" > $out/nixos-version
              printf '%s' "$switchScript" > $out/bin/switch-to-configuration
              chmod +x $out/bin/switch-to-configuration
              if [ "$payloadKib" -gt 0 ]; then
                head -c "$((payloadKib * 1024))" /dev/urandom > $out/payload
              fi
            ''
          ];
        };
    };
}
