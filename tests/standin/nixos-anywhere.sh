#!/bin/bash
# Stand-in nixos-anywhere (nix-community/nixos-anywhere 91fc9b7, src/nixos-anywhere.sh, as
# nixos/flake.nix patches it: no UserKnownHostsFile=/dev/null, no StrictHostKeyChecking=no), for
# the options flakefleet passes (flakefleet/bootstrap/command.py): --store-paths DISKO SYSTEM,
# --kexec TARBALL, --extra-files DIR, --ssh-port P, --ssh-option O..., --phases LIST,
# --build-on local, -i KEY, --target-host USER@HOST. Its steps, as the real script runs them:
#   key upload  ssh-copy-id of -i's key, retried until it works (`until ssh-copy-id ...; do sleep 3`)
#   facts       get-facts.sh over ssh
#   kexec       the tarball uploaded to $HOME/kexec and run; the installer keeps the machine's
#               host keys (nixos-images kexec-run.sh). Stand-in: the machine keeps running its
#               Linux (no kexec in a test machine); the tarball is uploaded and checked.
#   disko       `nix copy` of the disko script, then it runs on the machine (here: the
#               stand-in's disko script, which wipes what a fresh disk would not have)
#   install     `nix copy` of the system (the real one into /mnt; here the running store), the
#               extra files untarred onto the new root (here staged, laid over / at the reboot),
#               nixos-install: the system profile and the boot loader (here: nix-env --set and
#               switch-to-configuration boot)
#   reboot      `sleep 6 && reboot` in the background (here: 1 s), then waits until the
#               machine no longer answers
set -euo pipefail
sshArgs=(-o IdentitiesOnly=yes)
phases="kexec,disko,install,reboot"
while [[ $# -gt 0 ]]; do
  case "$1" in
  --store-paths) disko=$2 system=$3; shift 3 ;;
  --kexec) kexec=$2; shift 2 ;;
  --extra-files) extra=$2; shift 2 ;;
  --ssh-port) sshArgs+=(-p "$2"); shift 2 ;;
  --ssh-option) sshArgs+=(-o "$2"); shift 2 ;;
  --phases) phases=$2; shift 2 ;;
  --build-on) shift 2 ;;
  -i) sshArgs+=(-i "$2"); shift 2 ;;
  --target-host) target=$2; shift 2 ;;
  *) echo "stand-in nixos-anywhere: unsupported option $1" >&2; exit 2 ;;
  esac
done
step() { echo "### $* ###"; }
runSsh() { ssh "${sshArgs[@]}" "$target" "$@"; }
has() { [[ ",$phases," == *",$1,"* ]]; }
[[ -e $disko && -e $system ]] || { echo "$disko and $system must be existing store-paths" >&2; exit 1; }

step Uploading install SSH keys
until ssh-copy-id -o IdentitiesOnly=no -o ConnectTimeout=10 "${sshArgs[@]}" "$target" >/dev/null 2>&1; do
  sleep 3
done
step Gathering machine facts
runSsh 'uname -m; command -v tar cpio setsid' >/dev/null
if has kexec; then
  step Switching system into kexec
  runSsh 'mkdir -p "$HOME/kexec" && cat > "$HOME/kexec/kexec-tarball.tar.gz"' <"$kexec"
fi
if has disko; then
  NIX_SSHOPTS="${sshArgs[*]}" nix --extra-experimental-features nix-command copy --to "ssh://$target" "$disko"
  step Formatting hard drive with disko
  runSsh "$disko"
fi
if has install; then
  step Uploading the system closure
  NIX_SSHOPTS="${sshArgs[*]}" nix --extra-experimental-features nix-command copy --to "ssh://$target" "$system"
  step Copying extra files
  # Onto the new root (the real one: /mnt), which the machine runs from its next boot on: here a
  # staging directory laid over / just before the reboot (the running sshd keeps its key till then).
  tar -C "$extra" -cpf- . | runSsh "mkdir -p /var/lib/standin-mnt && tar -C /var/lib/standin-mnt -xf- --no-same-owner"
  step Installing NixOS
  runSsh "nix-env -p /nix/var/nix/profiles/system --set $system && $system/bin/switch-to-configuration boot"
fi
if has reboot; then
  step Rebooting
  runSsh "nohup sh -c 'sleep 1 && { [ ! -d /var/lib/standin-mnt ] || { cp -a /var/lib/standin-mnt/. / && rm -rf /var/lib/standin-mnt; }; } && systemctl reboot' >/dev/null 2>&1 &"
  step Waiting for the machine to become unreachable due to reboot
  while timeout 10 ssh "${sshArgs[@]}" -o ConnectTimeout=2 "$target" exit 0 2>/dev/null; do sleep 1; done
fi
step Done
