{
  description = "flakefleet: every node's NixOS system, one closure per pool";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = nixpkgs.lib.genAttrs systems;
      ff = import ./lib;
    in
    {
      nixosModules = {
        common = ./common;
        k3s-server = ./roles/k3s-server.nix;
        k3s-agent = ./roles/k3s-agent.nix;
        ec2 = ./hardware/ec2.nix;
        metal = ./hardware/metal.nix;
        per-host = ./mixins/per-host.nix;
      };

      # The interface flakefleet's Python evaluates (and the test stand-in flake copies):
      # `lib.toplevel spec` is the system of one pool, `spec` the JSON of
      # flakefleet/nixos.py:pool_spec.
      lib = ff // {
        # The pool spec as a module setting the `flakefleet.*` options.
        specModule = spec: {
          nixpkgs.hostPlatform = spec.system;
          flakefleet = {
            inherit (spec)
              cluster
              pool
              role
              hardware
              labels
              taints
              host
              ;
            apiEndpoint = spec.api_endpoint;
            tlsSans = spec.tls_sans;
            podCidr = spec.pod_cidr;
            serviceCidr = spec.service_cidr;
            k3sChannel = spec.k3s_channel;
            authorizedKeys = spec.authorized_keys;
            trustedPublicKeys = spec.trusted_public_keys;
          };
        };

        modulesFor = spec: [
          self.nixosModules.common
          (if spec.role == "control-plane" then self.nixosModules.k3s-server else self.nixosModules.k3s-agent)
          self.nixosModules.${spec.hardware}
          self.nixosModules.per-host
          (self.lib.specModule spec)
        ];

        poolSystem = spec: nixpkgs.lib.nixosSystem { modules = self.lib.modulesFor spec; };

        toplevel = spec: (self.lib.poolSystem spec).config.system.build.toplevel;
      };

      # `nix develop`: everything a contributor needs. Python packages come pinned from
      # requirements.txt into .venv, the same way CI installs them.
      devShells = forAllSystems (
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
        in
        {
          default = pkgs.mkShell {
            packages = with pkgs; [
              pulumi-bin
              python3
              kubectl
              awscli2
              openssh
              jq
              gnumake
              nixfmt
              nix-tree
            ];
            shellHook = ''
              if [ -f requirements.txt ]; then
                make --silent setup && source .venv/bin/activate
              fi
            '';
          };
        }
      );
    };
}
