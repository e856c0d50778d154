{
  description = "flakefleet: every node's NixOS system, one closure per pool";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    # Installing NixOS on bring-your-own machines (pools[].bootstrap): disko writes the disk
    # layout, nixos-anywhere installs over SSH from any Linux, kexec-ing into an installer built
    # from nixos-images with our nixpkgs (not the one it would download at run time). Fetched
    # only when a bootstrapped pool is evaluated or installed; their test-only inputs are cut off
    # (follows = "" points them at this flake, never fetched).
    disko = {
      url = "github:nix-community/disko";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    nixos-images = {
      url = "github:nix-community/nixos-images";
      inputs.nixos-stable.follows = "nixpkgs";
      inputs.nixos-unstable.follows = "nixpkgs";
    };
    nixos-anywhere = {
      url = "github:nix-community/nixos-anywhere";
      inputs.nixpkgs.follows = "nixpkgs";
      inputs.disko.follows = "disko";
      inputs.nixos-images.follows = "nixos-images";
      inputs.nixos-stable.follows = "nixpkgs";
      inputs.nix-vm-test.follows = "";
      inputs.treefmt-nix.follows = "";
    };
  };

  outputs =
    { self, nixpkgs, ... }@inputs:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = nixpkgs.lib.genAttrs systems;
      ff = import ./lib;
    in
    {
      # In the shape of nix-community/srvos: `common` is every node; a role is what a node does;
      # hardware is what it runs on; a mixin is what a pool opts into; an add-on is what the
      # control planes deploy into the cluster. Each is imported only where it applies.
      nixosModules = {
        common = ./common;
        k3s-server = ./roles/k3s-server.nix;
        k3s-agent = ./roles/k3s-agent.nix;
        ec2 = ./hardware/ec2.nix;
        metal = ./hardware/metal.nix;
        nvidia = ./hardware/nvidia.nix;
        per-host = ./mixins/per-host.nix;
        cilium = ./mixins/cilium.nix;
        workload-images = ./mixins/workload-images.nix;
        install = ./mixins/install.nix;
        pull = ./mixins/pull.nix;
        cilium-addon = ./addons/cilium.nix;
        nvidia-device-plugin = ./addons/nvidia-device-plugin.nix;
        cluster-autoscaler = ./addons/cluster-autoscaler.nix;
        workloads = ./addons/workloads.nix;
      };

      # The interface flakefleet's Python evaluates: `lib.evaluate spec` (flakefleet/nixos/
      # evaluate.nix asks it), everything read of one pool's system; `lib.toplevel spec` the system
      # alone (the test stand-in flake has that, without a module system). `spec` is the JSON of
      # flakefleet/plan/contract.py:PoolSpec.
      lib = ff // {
        # The pool spec as a module setting the `flakefleet.*` options: its keys are the options'
        # names (flakefleet/plan/contract.py:PoolSpec; nixos/common/spec-schema.json says which
        # keys are options and which choose modules). Keys a spec leaves out take the defaults.
        # A key the schema does not know is refused (it would otherwise be dropped unread);
        # `stack` is configurations.json's own.
        specModule =
          spec:
          let
            known = ff.specSchema.options // ff.specSchema.selects // { stack = null; };
            unknown = builtins.attrNames (removeAttrs spec (builtins.attrNames known));
          in
          if unknown != [ ] then
            throw "flakefleet: pool spec keys nixos/common/spec-schema.json does not declare: ${builtins.concatStringsSep ", " unknown} (regenerate it: make configurations)"
          else
            { flakefleet = builtins.intersectAttrs ff.specSchema.options spec; };

        # What a node is, whatever machine it runs on (the VM test uses these alone): every
        # node's modules, its role's, the mixins its pool opts into, and on control planes the
        # cluster's add-ons. Keys the VM test's spec leaves out mean "not asked for".
        roleModules =
          spec:
          let
            m = self.nixosModules;
            server = spec.role == "control-plane";
            cilium = (spec.cni or "flannel") == "cilium";
            optional = nixpkgs.lib.optional;
          in
          [
            m.common
            (if server then m.k3s-server else m.k3s-agent)
          ]
          ++ optional ((spec.host or null) != null) m.per-host
          ++ optional cilium m.cilium
          ++ optional ((spec.images or [ ]) != [ ]) m.workload-images
          ++ optional (spec.pull or false) m.pull
          ++ optional (server && cilium) m.cilium-addon
          ++ optional (server && (spec.clusterHasGpus or false)) m.nvidia-device-plugin
          ++ optional (server && (spec.clusterAutoscaler or null) != null) m.cluster-autoscaler
          ++ optional (server && (spec.workloads or [ ]) != [ ]) m.workloads
          ++ [ (self.lib.specModule spec) ];

        # A pool's whole module list: what its nodes are, the machine they run on, and the team's
        # own NixOS for every pool (site.nix) and for this one (pools/<pool>.nix), when present.
        modulesFor =
          spec:
          self.lib.roleModules spec
          ++ [ self.nixosModules.${spec.hardware} ]
          ++ nixpkgs.lib.optional ((spec.gpu or null) != null) self.nixosModules.nvidia
          ++ (if (spec.install or null) != null then self.lib.installModules spec.install else [ ])
          ++ self.lib.siteModules spec
          ++ [ { nixpkgs.hostPlatform = spec.system; } ];

        # The user's own modules (docs/nixos.md, "Your own NixOS"): ./site.nix on every pool of
        # every stack, ./pools/<pool>.nix on the pools of that name. Plain NixOS modules, imported
        # after ours, so a plain definition there overrides our lib.mkDefault ones. A flake sees
        # only files git tracks: `git add` them.
        siteModules =
          spec:
          nixpkgs.lib.optional (builtins.pathExists ./site.nix) ./site.nix
          ++ nixpkgs.lib.optional (builtins.pathExists (./pools + "/${spec.pool}.nix")) (./pools + "/${spec.pool}.nix");

        # A bootstrapped pool (spec.install = { layout; disk? }): disko's module with the
        # layout, and the disk (the install's own evaluation names the host's).
        installModules = install: [
          inputs.disko.nixosModules.disko
          self.nixosModules.install
          ./disko/${install.layout}.nix
        ]
        ++ nixpkgs.lib.optional ((install.disk or null) != null) { flakefleet.install.disk = install.disk; };

        # The script nixos-anywhere runs on a bootstrapped host to partition and mount its disks
        # (disko's system.build.diskoScript), for the spec of that host's install.
        diskoScript = spec: (self.lib.poolSystem spec).config.system.build.diskoScript;

        poolSystem = spec: nixpkgs.lib.nixosSystem { modules = self.lib.modulesFor spec; };

        # Everything flakefleet reads of a pool's system, from one evaluation of it: Nix does not
        # share function calls, so each `poolSystem spec` is a module system evaluation of its
        # own (colmena's src/nix/hive/eval.nix evaluates each node once the same way).
        # flakefleet/nixos/evaluate.nix asks this of every system a stack needs.
        evaluate =
          spec:
          let
            system = self.lib.poolSystem spec;
            toplevel = system.config.system.build.toplevel;
          in
          {
            drv = toplevel.drvPath;
            out = toplevel.outPath;
            boot = builtins.mapAttrs (_: builtins.unsafeDiscardStringContext) (self.lib.bootOf system);
            links = self.lib.k3sLinksOf system;
            agent = if spec.pull or false then (self.lib.pullAgentOf system).outPath else null;
          };

        # An autoscaled pool's pull agent (./host), built with the pool system's own pkgs
        # (nixos/lib/eval-config.nix returns them as `.pkgs`): the very path mixins/pull.nix
        # puts in its closure, which the launch template's user data names.
        pullAgentOf = system: import ./host { inherit (system) pkgs; };

        # What the system links into k3s' directories, by the names of the links: nixpkgs'
        # rancher/default.nix writes a tmpfiles `L+` rule per enabled manifest (at its `target`)
        # and per image (at its `name`). The preview names a link that goes away: pruning then
        # deletes its objects (flakefleet/delivery/prune.py), which k3s never does itself.
        k3sLinksOf =
          system:
          let
            k3s = system.config.services.k3s;
          in
          {
            manifests = map (m: m.target) (builtins.filter (m: m.enable) (builtins.attrValues k3s.manifests));
            images = map (i: i.name) k3s.images;
          };

        # What a host must reboot for when it changes: the store paths of the toplevel's `kernel`,
        # `initrd` and `kernel-modules` links and its `kernel-params` (evaluated, not built).
        bootOf =
          system:
          let
            c = system.config;
          in
          {
            kernel = "${c.boot.kernelPackages.kernel}/${c.system.boot.loader.kernelFile}";
            initrd = "${c.system.build.initialRamdisk}/${c.system.boot.loader.initrdFile}";
            modules = "${c.system.modulesTree}";
            params = toString c.boot.kernelParams;
          };

        # Each of the above from a spec alone (one evaluation each: use `evaluate` for several).
        toplevel = spec: (self.lib.poolSystem spec).config.system.build.toplevel;
        pullAgent = spec: self.lib.pullAgentOf (self.lib.poolSystem spec);
        k3sLinks = spec: self.lib.k3sLinksOf (self.lib.poolSystem spec);
        boot = spec: self.lib.bootOf (self.lib.poolSystem spec);
      };

      # Every system of every stack, from the specs flakefleet writes (configurations.json,
      # regenerated by `make configurations` and by the program): `<stack>-<pool>`, or
      # `<stack>-<pool>-<host>` for per-host closures. The usual NixOS commands work on them:
      #   nix build ./nixos#nixosConfigurations.dev-workers.config.system.build.toplevel
      #   nixos-rebuild build-vm --flake ./nixos#dev-cp
      nixosConfigurations = builtins.mapAttrs (_: self.lib.poolSystem) (
        builtins.fromJSON (builtins.readFile ./configurations.json)
      );

      # The workloads' images (nixos/workloads/), e.g. `nix build ./nixos#workload-hello`.
      # The installer of bootstrapped pools: `nixos-anywhere` and the `kexec-installer` tarball it
      # boots (flakefleet/bootstrap runs both from here).
      packages = forAllSystems (
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
        in
        nixpkgs.lib.mapAttrs' (name: w: nixpkgs.lib.nameValuePair "workload-${name}" w.image) (
          import ./workloads {
            inherit pkgs;
            inherit (nixpkgs) lib;
          }
        )
        // {
          nixos-anywhere = inputs.nixos-anywhere.packages.${system}.nixos-anywhere.overrideAttrs (old: {
            # nixos-anywhere puts `-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no` first
            # on every ssh command line (src/nixos-anywhere.sh, sshArgs), and ssh keeps an option's
            # first value: the pinned known_hosts given with --ssh-option would be ignored. Without
            # them, the pins apply to ssh, ssh-copy-id and nix copy alike.
            postPatch = (old.postPatch or "") + ''
              substituteInPlace src/nixos-anywhere.sh --replace-fail \
                ' "-o" "UserKnownHostsFile=/dev/null" "-o" "StrictHostKeyChecking=no"' ""
            '';
          });
          kexec-installer = inputs.nixos-images.packages.${system}.kexec-installer-nixos-stable-noninteractive;
        }
      );

      # `nix flake check`: every system of every stack evaluates (listed by derivation, nothing
      # built), and on x86_64-linux a two-node k3s cluster from our modules boots in VMs and
      # reaches Ready (needs KVM; the pull-request workflow runs it).
      checks = forAllSystems (
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          drvOf = c: builtins.unsafeDiscardStringContext c.config.system.build.toplevel.drvPath;
        in
        {
          configurations = pkgs.writeText "flakefleet-configurations" (
            nixpkgs.lib.concatLines (nixpkgs.lib.mapAttrsToList (name: c: "${name} ${drvOf c}") self.nixosConfigurations)
          );
        }
        // nixpkgs.lib.optionalAttrs (system == "x86_64-linux") {
          k3s-cluster = import ./tests/k3s-cluster.nix { inherit pkgs self; };
        }
      );

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
