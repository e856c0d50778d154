# A stand-in for nixos/ with the same interface (`lib.toplevel spec`), whose systems build
# offline with builder = /bin/sh and no nixpkgs. A system is laid out as a NixOS toplevel:
# bin/switch-to-configuration and activate (nixos.py: NixOS' switch rules, the boot loaders),
# init (stage 2), etc/systemd/system (its units, k3s' with nixpkgs' settings), sw/bin/k3s
# (k3s.py), kernel, initrd, kernel-modules, kernel-params, nixos-version. Its flake.lock has
# nixos/flake.lock's nixpkgs node, unused (no input names it, so nothing fetches it): the
# release the program then boots EC2 hosts with, as it would with nixos/.
{
  description = "flakefleet test stand-in: NixOS-shaped systems that build offline";

  outputs =
    { self }:
    let
      # The k3s command line the real modules render (nixos/roles/*.nix through nixpkgs'
      # rancher module), so tests see the flags a real node would start with.
      secrets = "/var/lib/flakefleet/secrets";
      # A derivation built by /bin/sh from `script`, with the host's coreutils (builders start
      # with no PATH): every stand-in store path is one of these.
      sh =
        spec: name: script: attrs:
        derivation (
          {
            inherit name;
            system = spec.system;
            builder = "/bin/sh";
            PATH = "/usr/bin:/bin";
            args = [
              "-c"
              script
            ];
          }
          // attrs
        );
      k3sArgs =
        spec:
        (
          if spec.role == "control-plane" then
            [
              "server"
              "--token-file"
              "${secrets}/k3s-server-token"
              "--agent-token-file"
              "${secrets}/k3s-agent-token"
            ]
          else
            [
              "agent"
              "--server"
              spec.apiEndpoint
              "--token-file"
              "${secrets}/k3s-agent-token"
            ]
        )
        ++ map (k: "--node-label=${k}=${spec.labels.${k}}") (builtins.attrNames spec.labels)
        # hardware/nvidia.nix and mixins/workload-images.nix add these labels and the GPU taint.
        ++ (if (spec.gpu or null) != null then [ "--node-label=nvidia.com/gpu.present=true" ] else [ ])
        ++ (if (spec.images or [ ]) != [ ] then [ "--node-label=flakefleet.io/pool=${spec.pool}" ] else [ ])
        ++ map (t: "--node-taint=${t}") spec.taints
        ++ (if (spec.gpu or null) != null then [ "--node-taint=nvidia.com/gpu=present:NoSchedule" ] else [ ])
        ++ [ "--protect-kernel-defaults" ]
        ++ (
          if spec.role == "control-plane" then
            [
              "--cluster-cidr=${spec.podCidr}"
              "--service-cidr=${spec.serviceCidr}"
              "--secrets-encryption"
            ]
            ++ map (s: "--tls-san=${s}") spec.tlsSans
            # mixins/cilium.nix: the servers turn k3s' own CNI off.
            ++ (
              if (spec.cni or "flannel") == "cilium" then
                [
                  "--flannel-backend=none"
                  "--disable-network-policy"
                ]
              else
                [ ]
            )
          else
            [ ]
        );
      # A workload's image as nixpkgs' dockerTools names it (`<name>.tar.gz`): a tarball that
      # services.k3s.images links into k3s' image directory (rancher/default.nix, tmpfiles L+).
      image = spec: name: sh spec "${name}.tar.gz" "printf 'standin image %s' ${name} > $out" { };
      # A workload's objects on a control plane: services.k3s.manifests' file, linked into k3s'
      # manifests directory (`workload-<name>.yaml`, nixos/addons/workloads.nix).
      manifest =
        spec: w:
        sh spec "k3s-manifest-workload-${w.name}"
          "printf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: workload-%s\\n' ${w.name} > $out" { };
      # What k3s.service asserts before starting (nixos/roles/k3s.nix: AssertPathExists).
      required =
        spec:
        (if spec.host == null then [ "/etc/rancher/k3s/config.yaml.d/50-flakefleet-host.yaml" ] else [ ])
        ++ [ "${secrets}/${if spec.role == "control-plane" then "k3s-server-token" else "k3s-agent-token"}" ];
      # The kernel as its own store path, named as nixpkgs names it (`linux-<version>`): systems
      # that share a kernel version share the path, so `kernel`, `initrd` and `kernel-modules` of
      # two systems compare as they do on real hosts (what delivery reads to decide on a reboot).
      kernel =
        spec:
        let
          version = spec.standin_kernel or (contents spec).kernel;
        in
        sh spec "linux-${version}" (
          "mkdir -p $out/lib/modules/${version} && "
          + (
            # The VM tier boots a real kernel: `standin_kernel_image`/`standin_initrd` name the
            # guest image's own (copied from this machine: the stand-in builds without a sandbox).
            if spec ? standin_kernel_image then
              "cp ${spec.standin_kernel_image} $out/bzImage && cp ${spec.standin_initrd} $out/initrd"
            else
              "printf 'kernel %s' ${version} > $out/bzImage && printf 'initrd %s' ${version} > $out/initrd"
          )
        ) { };

      # What a system is made of (packages.json): fake packages with names and versions, the
      # systemd units that run them, the kernel version; a pool's entry under `pools` adds to,
      # or (null) removes from, the common set. Tests edit this file to change a system.
      declared = builtins.fromJSON (builtins.readFile ./packages.json);
      contents =
        spec:
        let
          pool = declared.pools.${spec.pool} or { };
          merged =
            field:
            let
              all = declared.${field} // pool.${field} or { };
            in
            builtins.removeAttrs all (builtins.filter (n: all.${n} == null) (builtins.attrNames all));
        in
        {
          # Tests bump a package for one system with `standin_packages` (name -> version).
          packages = merged "packages" // (spec.standin_packages or { });
          units = merged "units";
          kernel = pool.kernel or declared.kernel;
        };

      # One fake package: a derivation named `<name>-<version>`, as nixpkgs names its packages,
      # with a program `bin/<name>`: the stand-in k3s for k3s, else a daemon that idles and logs
      # SIGHUP (a reload), so units that run it start, reload and stop as real ones do.
      daemon = ''
        #!/bin/sh
        trap 'echo "$(date +%s.%N) reloaded" >> /var/lib/flakefleet/standin-$(basename "$0").log' HUP
        trap 'exit 0' TERM
        while :; do sleep 3600 & wait $!; done
      '';
      package =
        spec: name: version:
        sh spec "${name}-${version}"
          "mkdir -p $out/share $out/bin && printf '%s %s' ${name} ${version} > $out/share/standin-package && printf '%s' \"$program\" > $out/bin/${name} && chmod +x $out/bin/${name}"
          { program = if name == "k3s" then builtins.readFile ./k3s.py else daemon; };
      packages = spec: builtins.mapAttrs (package spec) (contents spec).packages;

      # environment.systemPackages as NixOS builds it: one `system-path` derivation over the packages.
      systemPath =
        spec:
        sh spec "system-path"
          "mkdir -p $out && for p in $paths; do printf '%s\\n' $p >> $out/packages; done; touch $out/packages"
          { paths = builtins.attrValues (packages spec); };

      # systemd units as nixpkgs' nixos/lib/systemd-lib.nix makes them: a derivation
      # `unit-<name>` whose `text` is the unit file, inputs of one `system-units` derivation.
      # A unit's text names the package it runs, so a package bump changes (restarts) its unit;
      # `onChange` writes the X-ReloadIfChanged / X-RestartIfChanged lines NixOS writes. Every
      # unit gets NixOS' default unit PATH (nixos/lib/systemd-lib.nix, stage2ServiceConfig:
      # coreutils, findutils, grep, sed, systemd; here the machine's /usr/bin:/bin).
      # k3s.service has the settings of nixpkgs' k3s unit
      # (nixos/modules/services/cluster/rancher/default.nix) and the AssertPathExists of
      # nixos/roles/k3s.nix.
      k3sService =
        spec:
        let
          pkg = (packages spec).k3s;
          role = if spec.role == "control-plane" then "server" else "agent";
        in
        "[Unit]\nAfter=firewall.service network-online.target\n"
        + builtins.concatStringsSep "" (map (p: "AssertPathExists=${p}\n") (required spec))
        + "Description=k3s service\nWants=firewall.service network-online.target\n\n[Service]\n"
        + "Environment=\"PATH=/usr/bin:/bin\"\nDelegate=yes\n"
        + "ExecStart=${pkg}/bin/k3s ${builtins.concatStringsSep " " (k3sArgs spec)}\n"
        + "KillMode=process\nLimitCORE=infinity\nLimitNOFILE=1048576\nLimitNPROC=infinity\n"
        + "Restart=always\nRestartSec=5s\nTasksMax=infinity\nTimeoutStartSec=0\n"
        + "Type=${if role == "agent" then "exec" else "notify"}\n";
      unitText =
        spec: name: unit:
        if name == "k3s.service" then
          k3sService spec
        else
          let
            pkg = (packages spec).${unit.runs};
          in
          "[Unit]\nDescription=${name}\n\n[Service]\nEnvironment=\"PATH=/usr/bin:/bin\"\n"
          + (
            if (unit.onChange or "restart") == "reload" then
              "ExecReload=/bin/kill -HUP $MAINPID\nX-ReloadIfChanged=true\n"
            else if (unit.onChange or "restart") == "keep" then
              "X-RestartIfChanged=false\n"
            else
              ""
          )
          + "ExecStart=${pkg}/bin/${unit.runs}\n";
      unit =
        spec: name: unit:
        sh spec "unit-${name}" "mkdir -p $out && printf '%s' \"$text\" > $out/${name}" {
          text = unitText spec name unit;
        };
      # mixins/pull.nix's flakefleet-drain.service as NixOS renders it (nixos/lib/systemd-lib.nix:
      # `path` becomes PATH=<pkg>/bin:<pkg>/sbin before the defaults; `unitConfig` keys go to
      # [Unit], `serviceConfig` keys to [Service]).
      drainUnit =
        spec:
        let
          k3s = (packages spec).k3s;
        in
        sh spec "unit-flakefleet-drain.service" "mkdir -p $out && printf '%s' \"$text\" > $out/flakefleet-drain.service" {
          text =
            "[Unit]\nAfter=k3s.service\nConditionPathExists=/etc/flakefleet/pull.json\n"
            + "Description=Drain this node before its Auto Scaling group terminates it\n\n[Service]\n"
            + "Environment=\"PATH=${k3s}/bin:${k3s}/sbin:/usr/bin:/bin\"\n"
            + "ExecStart=${self.lib.pullAgent spec}/bin/flakefleet-drain /etc/flakefleet/pull.json\n"
            + "Restart=on-failure\nRestartSec=5s\n";
        };
      systemUnits =
        spec:
        sh spec "system-units" "mkdir -p $out && for u in $units; do ln -s $u/* $out/; done" {
          units =
            builtins.attrValues (builtins.mapAttrs (unit spec) (contents spec).units)
            ++ (if spec.pull or false then [ (drainUnit spec) ] else [ ]);
        };
    in
    {
      # No `lib.evaluate`: this stand-in has no module system to evaluate once, so
      # flakefleet/nixos/evaluate.nix asks it value by value, as it asks any flake without one.

      # As nixos/flake.nix: the boot files of a system, for the reboot decision at plan time.
      lib.boot = spec: {
        kernel = "${kernel spec}/bzImage";
        initrd = "${kernel spec}/initrd";
        modules = "${kernel spec}/lib/modules";
        params = "loglevel=4" + (if spec ? standin_kernel_params then " " + spec.standin_kernel_params else "");
      };

      # As nixos/flake.nix: the links the system makes in k3s' directories, named as this
      # stand-in's toplevel names them below (workload manifests `workload-<name>.yaml` on
      # control planes, images `<name>.tar.gz`).
      lib.k3sLinks = spec: {
        manifests = map (w: "workload-${w.name}.yaml") (spec.workloads or [ ]);
        images = map (n: "${n}.tar.gz") (spec.images or [ ]);
      };

      # As nixos/flake.nix: a bootstrapped host's disko script. Run on the machine by the stand-in
      # nixos-anywhere, it leaves what a freshly partitioned disk has: none of the old system's
      # state (flakefleet's, k3s'), and a log line naming the disk it was given.
      lib.diskoScript =
        spec:
        assert builtins.pathExists (./disko + "/${spec.install.layout}.nix");
        sh spec "disko-${spec.pool}" "printf '%s' \"$script\" > $out && chmod +x $out" {
          script = ''
            #!/bin/sh
            echo 'disko: wiped and mounted ${spec.install.disk} (layout ${spec.install.layout})' >> /var/lib/standin-disko.log
            rm -rf /var/lib/flakefleet /var/lib/rancher /etc/rancher /etc/flakefleet
          '';
        };

      # As nixos/flake.nix: nixos-anywhere (./nixos-anywhere.sh, restating its steps) and a kexec
      # tarball named as nixos-images names it.
      packages.x86_64-linux = {
        nixos-anywhere = sh { system = "x86_64-linux"; } "nixos-anywhere"
          "mkdir -p $out/bin && printf '%s' \"$script\" > $out/bin/nixos-anywhere && chmod +x $out/bin/nixos-anywhere"
          { script = builtins.readFile ./nixos-anywhere.sh; };
        kexec-installer = sh { system = "x86_64-linux"; } "kexec-tarball"
          "mkdir -p $out && printf 'stand-in kexec installer' > $out/nixos-kexec-installer-noninteractive-x86_64-linux.tar.gz" { };
      };

      # As nixos/host/default.nix: the pull agent of an autoscaled pool with hostctl.sh, and its
      # drain (bin/flakefleet-drain), run by
      # the machine's python3 (boto3, cryptography: the test image's Debian packages). This
      # flake cannot reach nixos/host/ from the store, so a test names that directory in the
      # spec (`standin_host_dir`, read impurely); without it the agent only says so.
      lib.pullAgent =
        spec:
        let
          dir = spec.standin_host_dir or null;
        in
        sh spec "flakefleet-pull" ''
          mkdir -p $out/bin $out/share/flakefleet
          printf '%s' "$hostctl" > $out/share/flakefleet/hostctl.sh
          printf '%s' "$agent" > $out/share/flakefleet/flakefleet_pull.py
          printf '%s' "$drain" > $out/share/flakefleet/flakefleet_drain.py
          printf '%s\n' '#!/bin/sh' 'PATH=/run/current-system/sw/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'export PATH' \
            "exec /usr/bin/python3 $out/share/flakefleet/flakefleet_pull.py $out/share/flakefleet/hostctl.sh \"\$@\"" \
            > $out/bin/flakefleet-pull
          printf '%s\n' '#!/bin/sh' "exec /usr/bin/python3 $out/share/flakefleet/flakefleet_drain.py \"\$@\"" \
            > $out/bin/flakefleet-drain
          chmod +x $out/bin/flakefleet-pull $out/bin/flakefleet-drain
        '' {
          hostctl = if dir == null then "exit 3" else builtins.readFile (dir + "/hostctl.sh");
          agent = if dir == null then "raise SystemExit('stand-in: no standin_host_dir')" else builtins.readFile (dir + "/flakefleet_pull.py");
          drain = if dir == null then "raise SystemExit('stand-in: no standin_host_dir')" else builtins.readFile (dir + "/flakefleet_drain.py");
        };

      lib.toplevel =
        spec:
        assert spec ? apiEndpoint; # a spec of flakefleet/plan/contract.py:PoolSpec (camelCase keys)
        derivation {
          name = "nixos-system-${spec.pool}${if spec.host == null then "" else "-" + spec.host.name}";
          system = spec.system;
          builder = "/bin/sh";
          # Builders start with no PATH; the host's coreutils are all a stand-in needs.
          PATH = "/usr/bin:/bin";
          # The whole spec is an input: any change to it is a new system, as with the real flake.
          specJson = builtins.toJSON spec;
          nixosScript = builtins.readFile ./nixos.py;
          bootctlScript = builtins.readFile ./bootctl.sh;
          kernel = kernel spec;
          kernelParams = "loglevel=4" + (if spec ? standin_kernel_params then " " + spec.standin_kernel_params else "");
          k3s = (packages spec).k3s;
          systemPath = systemPath spec;
          systemUnits = systemUnits spec;
          k3sArgs = builtins.concatStringsSep " " (k3sArgs spec);
          k3sRequired = builtins.concatStringsSep " " (required spec);
          images = map (image spec) (spec.images or [ ]);
          manifests = map (manifest spec) (spec.workloads or [ ]);
          # mixins/pull.nix: an autoscaled pool's closure holds its pull agent.
          pullAgent = if spec.pull or false then self.lib.pullAgent spec else "";
          # Benchmarks only: a payload of this many KiB, so copies move real bytes.
          payloadKib = toString (spec.standin_payload_kib or 0);
          args = [
            "-c"
            ''
              set -e
              mkdir -p $out/bin
              printf '%s' "$specJson" > $out/spec.json
              printf '%s\n' "flakefleet-standin" > $out/nixos-version
              printf '%s' "$nixosScript" > $out/bin/switch-to-configuration
              printf '%s' "$nixosScript" > $out/activate
              chmod +x $out/bin/switch-to-configuration $out/activate
              # Stage 2 (nixos/modules/system/boot/stage-2-init.sh): the activation script,
              # /run/booted-system and its GC root, then systemd (the machine's own).
              printf '%s\n' '#!/bin/sh' 'export PATH=/usr/sbin:/usr/bin:/sbin:/bin' "systemConfig=$out" \
                '"$systemConfig/activate"' 'ln -sfn "$systemConfig" /run/booted-system' \
                'mkdir -p /nix/var/nix/gcroots && ln -sfn /run/booted-system /nix/var/nix/gcroots/booted-system' \
                'exec /lib/systemd/systemd' > $out/init
              chmod +x $out/init
              mkdir -p $out/sw/bin $out/etc/systemd/system/multi-user.target.wants
              ln -s $k3s/bin/k3s $out/sw/bin/k3s
              # curl (a NixOS core package) as far as k3s answers it: /db/info (k3s.py).
              ln -s $k3s/bin/k3s $out/sw/bin/curl
              # /etc/systemd/system as NixOS' etc derivation has it: every unit, wanted by
              # multi-user.target.
              for u in $systemUnits/*; do
                ln -s "$(readlink $u)" $out/etc/systemd/system/''${u##*/}
                ln -s ../''${u##*/} $out/etc/systemd/system/multi-user.target.wants/''${u##*/}
              done
              # mixins/pull.nix: the pull agent in environment.systemPackages (so in the closure).
              if [ -n "$pullAgent" ]; then ln -s $pullAgent/bin/flakefleet-pull $out/sw/bin/flakefleet-pull; fi
              printf '%s' "$bootctlScript" > $out/sw/bin/bootctl
              chmod +x $out/sw/bin/bootctl
              ln -s $kernel/bzImage $out/kernel
              ln -s $kernel/initrd $out/initrd
              ln -s $kernel/lib/modules $out/kernel-modules
              printf '%s' "$kernelParams" > $out/kernel-params
              printf '%s\n' "$k3sArgs" > $out/k3s-args
              printf '%s\n' "$k3sRequired" > $out/k3s-required
              ln -s $systemPath $out/system-path
              ln -s $systemUnits $out/system-units
              mkdir -p $out/k3s-images
              for i in $images; do ln -s $i $out/k3s-images/''${i#*-}; done
              # The tmpfiles rules nixpkgs' k3s module writes (rancher/default.nix: settings."10-k3s",
              # an `L+` per manifest and image; tmpfiles.nix: /etc/tmpfiles.d/10-k3s.conf, each rule
              # as '<type>' '<path>' '<mode>' '<user>' '<group>' '<age>' <argument>).
              mkdir -p $out/etc/tmpfiles.d
              : > $out/etc/tmpfiles.d/10-k3s.conf
              for i in $images; do
                printf "'L+' '/var/lib/rancher/k3s/agent/images/%s' '-' '-' '-' '-' %s\n" "''${i#*-}" "$i" >> $out/etc/tmpfiles.d/10-k3s.conf
              done
              for m in $manifests; do
                printf "'L+' '/var/lib/rancher/k3s/server/manifests/%s.yaml' '-' '-' '-' '-' %s\n" "''${m#*-k3s-manifest-}" "$m" >> $out/etc/tmpfiles.d/10-k3s.conf
              done
              if [ "$payloadKib" -gt 0 ]; then
                head -c "$((payloadKib * 1024))" /dev/urandom > $out/payload
              fi
            ''
          ];
        };
    };
}
