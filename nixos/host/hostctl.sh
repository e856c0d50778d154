#!/bin/sh
# flakefleet host control: run as root on a node by the deployer over SSH, as `sh hostctl.sh ...`
# (sent on stdin before anything is installed, later from /run/flakefleet, which the initramfs
# of some distributions mounts noexec).
#
#   hostctl.sh state                          what the host runs (current system, profile, applied digest)
#   hostctl.sh activate OUT TOKEN DEADMAN_S SWITCH_S
#                                             install staged files, arm the dead-man switch, activate OUT
#                                             (`switch-to-configuration test`, bounded by SWITCH_S)
#   hostctl.sh check TOKEN OUT SETTLE_S       (new connection) is the host running OUT, healthy, settled?
#   hostctl.sh confirm TOKEN OUT DIGEST       keep OUT: disarm the dead-man switch, make OUT the profile's
#                                             new generation and the boot default, record DIGEST
#   hostctl.sh rollback TOKEN REASON          re-activate the confirmed system, restore files
#   hostctl.sh expire TOKEN                   the dead-man switch: roll back unless confirmed
#   hostctl.sh claim OWNER                    record which delivery Command holds the host
#   hostctl.sh previous                       the newest confirmed system not running now (rollback target)
#   hostctl.sh note-rollback FROM TO          record an operator's rollback (drift reports it)
#   hostctl.sh needs-reboot OUT               what of OUT's boot files differs from the booted system
#   hostctl.sh boot-stage OUT TOKEN           install staged files, make OUT a new generation booted
#                                             once (one-shot entry); the previous one stays the default
#   hostctl.sh reboot TOKEN                   reboot now (TOKEN's /run marker is gone once it did)
#   hostctl.sh check-boot TOKEN OUT SETTLE_S  (after the reboot) booted OUT (- : any), healthy, settled?
#   hostctl.sh confirm-boot TOKEN OUT DIGEST  make OUT's generation the boot default; record DIGEST
#   hostctl.sh boot-rollback TOKEN REASON     previous generation the default again, files restored
#   hostctl.sh forget-boot TOKEN              the host runs TOKEN's system: drop what a rollback would restore
#   hostctl.sh retire                         the host leaves the cluster: stop k3s
#   hostctl.sh forget-etcd                    its etcd member is removed: set its etcd data aside
#   hostctl.sh restore ID OUT K3S-ARGS...     once per ID: stop k3s, run OUT's k3s with the arguments
#   hostctl.sh wipe-etcd ID                   once per ID: stop k3s, remove its etcd data
#
# Activating follows `nixos-rebuild test`: OUT/bin/switch-to-configuration test, under systemd-run
# as nixos-rebuild runs it, so nothing changes the boot loader or the profile until the host is
# confirmed; `confirm` then does what the rest of `nixos-rebuild switch` does (`nix-env -p
# /nix/var/nix/profiles/system --set OUT`, `switch-to-configuration boot`). A reset during the
# health window boots the confirmed generation.
# Staged files (host facts, secrets) are in /run/flakefleet/TOKEN/files, mirroring their
# absolute paths; what they replace is kept in .../backup so a rollback restores it. NixOS'
# switch restarts only units whose unit files changed, so the units that read a changed file
# (TOKEN/restarts: "path unit...") are restarted here unless the switch restarted them.
# Exactly one of confirm and rollback/expire wins: the first to create TOKEN/decided.
#
# Exit codes: 2 decided already (rolled back) or booted something else, 3 not healthy yet (ask
# again), 4 some units failed to start (switch-to-configuration's own 4), 5 unhealthy now (a
# watched unit restarted or stopped after the activation), 124 the switch did not finish in time,
# 127 a program hostctl needs is not on PATH.
set -eu
umask 077

PROFILE=/nix/var/nix/profiles/system
RUN=/run/flakefleet
SELF=$RUN/hostctl.sh
STATE=/var/lib/flakefleet
APPLIED=$STATE/applied
APPLIED_SYSTEM=$STATE/applied-system
APPLIED_PROFILE=$STATE/applied-profile
LOG=$STATE/deliveries.log
# The units the health gate watches: k3s is what makes the host a node.
WATCH="k3s.service"

# The running system's programs first (NixOS: /run/current-system/sw/bin, resolved so that a
# switch does not change them under us), then the caller's PATH. Transient units (the dead-man
# switch, the switch itself) get this PATH explicitly: NixOS runs its manager with systemd's own
# bin directory only, where no mkdir or nix-env is to be found.
PATH="$(readlink -f /run/current-system/sw/bin 2>/dev/null || true):${PATH:-/usr/bin:/bin}"
export PATH
for tool in mkdir cp mv rm cat date readlink find sed; do
  command -v "$tool" >/dev/null 2>&1 || { echo "hostctl: $tool is not on PATH ($PATH)" >&2; exit 127; }
done

has_systemd() { [ -d /run/systemd/system ]; }

log() {
  mkdir -p "$STATE"
  printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$LOG"
}

# Empty until the host runs a NixOS system (a fresh machine has no /run/current-system link).
current_system() { [ -L /run/current-system ] && readlink -f /run/current-system 2>/dev/null || true; }

switch_to() { # system action unit-suffix [limit_s]: switch-to-configuration ACTION, as nixos-rebuild runs it
  if has_systemd; then
    limit=${4:-0}
    [ "$limit" -gt 0 ] || limit=infinity
    systemd-run -E LOCALE_ARCHIVE -E NIXOS_INSTALL_BOOTLOADER -E PATH --collect --no-ask-password --pipe --quiet \
      --service-type=exec --unit="flakefleet-switch-$3" --property="RuntimeMaxSec=$limit" --wait \
      "$1/bin/switch-to-configuration" "$2"
  else
    "$1/bin/switch-to-configuration" "$2"
  fi
}

stop_switch() { # unit-suffix: a switch still running (hung, or its deployer gone) is stopped first
  if has_systemd; then systemctl stop "flakefleet-switch-$1.service" 2>/dev/null || true; fi
}

arm_deadman() { # token seconds
  if has_systemd; then
    systemd-run --quiet --collect --unit="flakefleet-deadman-$1" --on-active="$2" -E PATH \
      --timer-property=AccuracySec=1s /bin/sh "$SELF" expire "$1"
  else
    setsid sh -c "sleep $2; exec sh '$SELF' expire '$1'" </dev/null >/dev/null 2>&1 &
    echo $! >"$RUN/$1/deadman.pid"
  fi
}

disarm_deadman() { # token
  if has_systemd; then
    systemctl stop "flakefleet-deadman-$1.timer" 2>/dev/null || true
  elif [ -f "$RUN/$1/deadman.pid" ]; then
    # The whole group: the waiting `sleep` too (setsid made the shell its group's leader).
    kill -- "-$(cat "$RUN/$1/deadman.pid")" 2>/dev/null || true
  fi
}

install_files() { # stage: install; TOKEN/changed lists the paths whose content is new
  : >"$1/changed"
  (cd "$1/files" && find . -type f) | while IFS= read -r rel; do
    rel=${rel#./}
    dest=/$rel
    mkdir -p "$(dirname "$dest")" "$1/backup/$(dirname "$rel")"
    if [ -e "$dest" ]; then
      cp -p "$dest" "$1/backup/$rel"
      cmp -s "$dest" "$1/files/$rel" || printf '%s\n' "$dest" >>"$1/changed"
    else
      printf '%s\n' "$dest" >>"$1/created"
      printf '%s\n' "$dest" >>"$1/changed"
    fi
    cp -p "$1/files/$rel" "$dest.flakefleet-new"
    mv -f "$dest.flakefleet-new" "$dest"
  done
  # Files placed only where none is yet (the stack's k3s CAs): an existing one is never replaced.
  if [ -d "$1/create-only" ]; then
    (cd "$1/create-only" && find . -type f) | while IFS= read -r rel; do
      rel=${rel#./}
      dest=/$rel
      [ -e "$dest" ] && continue
      mkdir -p "$(dirname "$dest")"
      printf '%s\n' "$dest" >>"$1/created"
      cp -p "$1/create-only/$rel" "$dest.flakefleet-new"
      mv -f "$dest.flakefleet-new" "$dest"
    done
  fi
}

restore_files() { # stage
  if [ -d "$1/backup" ]; then
    (cd "$1/backup" && find . -type f) | while IFS= read -r rel; do
      rel=${rel#./}
      cp -p "$1/backup/$rel" "/$rel"
    done
  fi
  if [ -f "$1/created" ]; then
    while IFS= read -r path; do rm -f "$path"; done <"$1/created"
  fi
}

readers() { # stage: the units that read a changed file (TOKEN/restarts lines: "path unit...")
  [ -s "$1/changed" ] && [ -f "$1/restarts" ] || return 0
  while IFS= read -r path; do
    sed -n "s|^$path ||p" "$1/restarts"
  done <"$1/changed" | tr ' ' '\n' | sed '/^$/d' | sort -u
}

invocation() { # unit: its current InvocationID ("" when it is not running)
  systemctl show -p InvocationID --value "$1" 2>/dev/null || true
}

record_invocations() { # stage file units...: "unit invocation" per unit, before a switch
  stage=$1 file=$2
  shift 2
  : >"$stage/$file"
  for unit in "$@"; do printf '%s %s\n' "$unit" "$(invocation "$unit")" >>"$stage/$file"; done
}

refresh_readers() { # stage file: restart the units that read changed files, unless the switch restarted them
  has_systemd && [ -s "$1/$2" ] || return 0
  while read -r unit before; do
    now=$(invocation "$unit")
    if [ -n "$now" ] && [ "$now" = "${before:-}" ]; then
      # A unit that can reload (the firewall: its reload drops traffic while it rebuilds the rules,
      # a restart would leave the host open in between) reloads; the others restart.
      if [ "$(systemctl show -p CanReload --value "$unit" 2>/dev/null)" = yes ]; then
        systemctl try-reload-or-restart "$unit" && log "reloaded $unit: files it reads changed ($(tr '\n' ' ' <"$1/changed"))"
      else
        systemctl try-restart "$unit" && log "restarted $unit: files it reads changed ($(tr '\n' ' ' <"$1/changed"))"
      fi
    fi
  done <"$1/$2"
}

unit_state() { # unit: "ActiveState SubState NRestarts InvocationID ExecMainStatus", "-" for none
  shown=$(systemctl show -p ActiveState -p SubState -p NRestarts -p InvocationID -p ExecMainStatus "$1" 2>/dev/null || true)
  for key in ActiveState SubState NRestarts InvocationID ExecMainStatus; do
    value=$(printf '%s\n' "$shown" | sed -n "s/^$key=//p")
    printf '%s ' "${value:--}"
  done
}

record_watch() { # file: the watched units as they are now, and when ("time unit restarts invocation")
  : >"$1"
  for unit in $WATCH; do
    [ "$(systemctl show -p LoadState --value "$unit" 2>/dev/null)" = loaded ] || continue
    # shellcheck disable=SC2046 # five words
    set -- "$1" $(unit_state "$unit")
    printf '%s %s %s %s\n' "$(date +%s)" "$unit" "$4" "$5" >>"$1"
  done
}

healthy() { # baseline settle_s: systemd running, each watched unit active in the same invocation
  # as at the baseline (no restart since), for settle_s; exit 3 not yet, 5 never (restarted)
  health=$(systemctl is-system-running 2>/dev/null || true)
  if [ "$health" != running ]; then
    failed=$(systemctl list-units --state=failed --no-legend --plain 2>/dev/null | cut -d' ' -f1 | tr '\n' ' ')
    echo "system is $health${failed:+ (failed: $failed)}" >&2
    return 3
  fi
  [ -f "$1" ] || return 0
  now=$(date +%s)
  while read -r since unit restarts inv; do
    # shellcheck disable=SC2046 # five words
    set -- "$1" "$2" $(unit_state "$unit")
    active=$3 sub=$4 n=$5 current=$6 status=$7
    case "$n$restarts" in *[!0-9]*) n=0 restarts=0 ;; esac
    if [ "$n" -gt "$restarts" ] || { [ "$inv" != - ] && [ "$current" != - ] && [ "$current" != "$inv" ]; }; then
      echo "$unit restarted since the activation (NRestarts $restarts -> $n, now $active/$sub, last exit status $status)" >&2
      return 5
    fi
    if [ "$active" != active ] || [ "$sub" != running ]; then
      echo "$unit is $active/$sub" >&2
      return 3
    fi
    if [ $((now - since)) -lt "$2" ]; then
      echo "$unit settling: up $((now - since))s of ${2}s without a restart" >&2
      return 3
    fi
  done <"$1"
}

reboot_parts() { # out: which of its boot files differ from the booted system's, one a line
  [ -e /run/booted-system ] || return 0 # not booted from a NixOS system flakefleet can compare with
  for part in kernel initrd kernel-modules; do
    [ "$(readlink -f "$1/$part" 2>/dev/null)" = "$(readlink -f "/run/booted-system/$part" 2>/dev/null)" ] || echo "$part"
  done
  [ "$(cat "$1/kernel-params" 2>/dev/null)" = "$(cat /run/booted-system/kernel-params 2>/dev/null)" ] || echo kernel-params
}

generation_of() { # profile link name (system-N-link) -> N
  n=${1#system-}
  printf '%s\n' "${n%-link}"
}

# The boot loader: systemd-boot (bring-your-own metal) or GRUB (the NixOS EC2 image).
# systemd-boot: `bootctl set-default` / `set-oneshot` on the generation's entry
#   (nixos-generation-N.conf; the EFI variables win over loader.conf).
# GRUB: the default entry is the system whose `switch-to-configuration boot` ran last (NixOS'
#   install-grub writes "NixOS - Default" for it and every generation under "NixOS - All
#   configurations"); `grub-reboot` sets next_entry, which NixOS' grub.cfg boots once and clears.
grub_entry() { # generation -> "submenu>entry" as grub-reboot takes it
  entry=$(sed -n "s/^ *menuentry \"\(NixOS - Configuration $1 [^\"]*\)\".*/\1/p" /boot/grub/grub.cfg | head -n 1)
  [ -n "$entry" ] || { echo "generation $1 has no GRUB entry" >&2; return 1; }
  printf 'NixOS - All configurations>%s\n' "$entry"
}

bootloader() { # default|oneshot GENERATION
  bootctl=$(command -v bootctl || echo /run/current-system/sw/bin/bootctl)
  if [ -d /boot/loader/entries ] && [ -x "$bootctl" ]; then
    "$bootctl" "set-$1" "nixos-generation-$2.conf"
  elif [ -f /boot/grub/grub.cfg ]; then
    if [ "$1" = default ]; then
      "$(readlink -f "$PROFILE-$2-link")/bin/switch-to-configuration" boot
    else
      entry=$(grub_entry "$2") || return 1
      grub-reboot "$entry"
    fi
  else
    echo "no boot loader flakefleet knows (systemd-boot's entries or GRUB's grub.cfg)" >&2
    return 1
  fi
}

record_confirmed() { # out digest: what a drift check compares with
  mkdir -p "$STATE"
  printf '%s\n' "$2" >"$APPLIED"
  printf '%s\n' "$1" >"$APPLIED_SYSTEM"
  readlink "$PROFILE" >"$APPLIED_PROFILE"
  rm -f "$STATE/rolled-back"
  printf '%s\n' "$1" >>"$STATE/confirmed"
}

reboot_now() { # token: the token's /run directory is the marker a finished reboot wipes
  mkdir -p "$RUN/$1"
  : >"$RUN/$1/rebooting"
  if has_systemd; then
    systemd-run --quiet --collect --on-active=2 --timer-property=AccuracySec=100ms "$(command -v systemctl)" reboot
  else
    : >"$RUN/reboot-requested" # a host without systemd cannot reboot by itself
  fi
}

do_rollback() { # token reason: back to the confirmed system (the profile was never changed)
  stage=$RUN/$1
  stop_switch "$1"
  # shellcheck disable=SC2046 # unit names
  record_invocations "$stage" readers-rollback $(readers "$stage")
  restore_files "$stage"
  prev=$(cat "$stage/prev" 2>/dev/null || true)
  if [ -n "$prev" ]; then
    gen=$(generation_of "$prev")
    if switch_to "$(readlink -f "$(dirname "$PROFILE")/$prev")" test "rollback-$1" >/dev/null 2>&1; then
      outcome="rolled back to generation $gen ($(current_system)): $2"
    else
      outcome="rolled back to generation $gen, but its activation reported failures: $2"
    fi
  else
    outcome="not rolled back, there is no previous generation: $2"
  fi
  refresh_readers "$stage" readers-rollback
  printf '%s\n' "$outcome" >"$stage/outcome"
  log "$1 $outcome"
  printf '%s\n' "$outcome"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
state)
  printf 'current=%s\n' "$(current_system)"
  printf 'profile=%s\n' "$(readlink "$PROFILE" 2>/dev/null || true)"
  printf 'applied=%s\n' "$(cat "$APPLIED" 2>/dev/null || true)"
  printf 'applied_system=%s\n' "$(cat "$APPLIED_SYSTEM" 2>/dev/null || true)"
  printf 'applied_profile=%s\n' "$(cat "$APPLIED_PROFILE" 2>/dev/null || true)"
  if [ -d /var/lib/rancher/k3s/server/db ]; then echo etcd_data=yes; else echo etcd_data=no; fi
  printf 'restored=%s\n' "$(cat "$STATE/restored" 2>/dev/null || true)"
  printf 'owner=%s\n' "$(cat "$STATE/owner" 2>/dev/null || true)"
  printf 'rolled_back=%s\n' "$(cat "$STATE/rolled-back" 2>/dev/null || true)"
  printf 'booted=%s\n' "$(readlink -f /run/booted-system 2>/dev/null || true)"
  running=$(current_system)
  printf 'reboot_pending=%s\n' "$(if [ -n "$running" ]; then reboot_parts "$running" | tr '\n' ' '; fi)"
  # A boot of a new generation that was never confirmed (the host was reset, or the deployer lost).
  for keep in "$STATE"/boot-*; do
    if [ -d "$keep" ]; then printf 'unconfirmed_boot=%s %s\n' "${keep##*/boot-}" "$(cat "$keep/system" 2>/dev/null)"; fi
  done
  ;;
previous)
  # The newest system flakefleet confirmed here that is not the running one (a failed
  # generation is never a rollback target); without that history, the newest earlier generation.
  running=$(current_system)
  found=""
  if [ -s "$STATE/confirmed" ]; then
    found=$(grep -vxF "$running" "$STATE/confirmed" | tail -n 1 || true)
  else
    n=$(generation_of "$(readlink "$PROFILE" 2>/dev/null || true)")
    for g in $(ls "$(dirname "$PROFILE")" | sed -n 's/^system-\([0-9][0-9]*\)-link$/\1/p' | sort -n); do
      [ -n "$n" ] && [ "$g" -lt "$n" ] || continue
      target=$(readlink -f "$PROFILE-$g-link")
      [ "$target" = "$running" ] || found=$target
    done
  fi
  printf '%s\n' "$found"
  ;;
note-rollback)
  mkdir -p "$STATE"
  printf '%s %s %s\n' "$1" "$2" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$STATE/rolled-back"
  log "rolled back by an operator: $1 -> $2"
  ;;
claim)
  # The delivery Command that holds this host now (its owner id, from its report).
  mkdir -p "$STATE"
  printf '%s\n' "$1" >"$STATE/owner"
  log "claimed by delivery $1"
  ;;
activate)
  out=$1 token=$2 deadman=$3 limit=${4:-0}
  stage=$RUN/$token
  [ -d "$stage/files" ] || { echo "nothing staged for $token" >&2; exit 1; }
  # A dropped connection (the new system restarting sshd or the network) must not stop this
  # half-way: ignore the hang-up and the broken pipe, keep the switch's output in a file.
  trap '' HUP PIPE
  : >"$stage/activating" # `check` waits while it exists
  readlink "$PROFILE" >"$stage/prev" 2>/dev/null || : >"$stage/prev"
  install_files "$stage"
  # shellcheck disable=SC2046 # unit names
  record_invocations "$stage" readers $(readers "$stage")
  arm_deadman "$token" "$deadman"
  log "$token activate $out (confirmed: $(cat "$stage/prev"))"
  start=$(date +%s)
  if switch_to "$out" test "$token" "$limit" >"$stage/switch.log" 2>&1; then rc=0; else rc=$?; fi
  if [ "$rc" -ne 0 ] && [ "$limit" -gt 0 ] && [ $(($(date +%s) - start)) -ge "$limit" ]; then
    rc=124
  fi
  refresh_readers "$stage" readers
  # A Lease renewed after this was renewed by the k3s the switch left running (an old one that a
  # restart stopped may have renewed it during the switch).
  date +%s.%N >"$stage/switched_at"
  record_watch "$stage/watch"
  rm -f "$stage/activating"
  cat "$stage/switch.log" >&2 2>/dev/null || true
  if [ "$rc" -eq 124 ]; then
    echo "switch-to-configuration did not finish within ${limit}s (a unit's start job never ended)" >&2 || true
  fi
  exit "$rc"
  ;;
check | confirm)
  token=$1 out=$2
  stage=$RUN/$token
  if [ -f "$stage/outcome" ]; then
    echo "$(cat "$stage/outcome")" >&2
    exit 2
  fi
  [ ! -f "$stage/activating" ] || { echo "still activating" >&2; exit 3; }
  running=$(current_system)
  [ "$running" = "$out" ] || { echo "running $running, not $out" >&2; exit 3; }
  if [ "$cmd" = check ]; then
    if has_systemd; then healthy "$stage/watch" "${3:-0}" || exit $?; fi
    printf 'switched_at=%s\n' "$(cat "$stage/switched_at" 2>/dev/null || echo 0)"
    exit 0
  fi
  digest=$3
  mkdir "$stage/decided" 2>/dev/null || { echo "$(cat "$stage/outcome" 2>/dev/null || echo decided)" >&2; exit 2; }
  disarm_deadman "$token"
  echo confirmed >"$stage/outcome"
  # The rest of `nixos-rebuild switch`: a new generation of the profile, the boot default.
  if [ "$(readlink -f "$PROFILE" 2>/dev/null)" != "$out" ]; then nix-env -p "$PROFILE" --set "$out"; fi
  # What flakefleet put here: a drift check compares the running system and profile with these.
  record_confirmed "$out" "$digest"
  log "$token confirmed $out"
  if ! "$out/bin/switch-to-configuration" boot >"$stage/boot.log" 2>&1; then
    log "$token: the boot loader could not be updated: $(tail -n 1 "$stage/boot.log")"
    echo "confirmed, but the boot loader could not be made to boot it: $(tail -n 1 "$stage/boot.log")" >&2
    exit 6
  fi
  ;;
rollback)
  token=$1 reason=$2
  stage=$RUN/$token
  if ! mkdir "$stage/decided" 2>/dev/null; then
    cat "$stage/outcome" 2>/dev/null || echo "already decided"
    exit 0
  fi
  disarm_deadman "$token"
  do_rollback "$token" "$reason"
  ;;
expire)
  token=$1
  mkdir "$RUN/$token/decided" 2>/dev/null || exit 0
  do_rollback "$token" "the deployer did not confirm in time" >/dev/null
  ;;
restore | wipe-etcd)
  id=$1
  shift
  if [ "$(cat "$STATE/restored" 2>/dev/null || true)" = "$id" ]; then
    echo "restore $id was done on this host already"
    exit 0
  fi
  if has_systemd; then
    systemctl stop k3s.service 2>/dev/null || true
  fi
  if [ "$cmd" = restore ]; then
    out=$1
    shift
    # k3s resets the cluster to the snapshot and exits; the switch then starts it normally.
    "$out/sw/bin/k3s" "$@"
    what="restored the cluster from the snapshot"
  else
    rm -rf /var/lib/rancher/k3s/server/db
    what="wiped the old etcd data; k3s joins the restored cluster"
  fi
  mkdir -p "$STATE"
  printf '%s\n' "$id" >"$STATE/restored"
  log "restore $id: $what"
  if has_systemd; then
    # In place (the system is unchanged, the switch will not start it): start k3s again.
    systemctl start k3s.service 2>/dev/null || true
  fi
  echo "$what"
  ;;
needs-reboot)
  reboot_parts "$1"
  ;;
boot-stage)
  out=$1 token=$2
  stage=$RUN/$token
  keep=$STATE/boot-$token # survives the reboot, unlike /run
  [ -d "$stage/files" ] || { echo "nothing staged for $token" >&2; exit 1; }
  mkdir -p "$keep"
  readlink "$PROFILE" >"$keep/prev" 2>/dev/null || : >"$keep/prev"
  install_files "$stage"
  cp -a "$stage/backup" "$keep/" 2>/dev/null || true
  cp "$stage/created" "$keep/" 2>/dev/null || true
  nix-env -p "$PROFILE" --set "$out"
  "$out/bin/switch-to-configuration" boot
  new=$(generation_of "$(readlink "$PROFILE")")
  prev=$(generation_of "$(cat "$keep/prev")")
  printf '%s\n' "$new" >"$keep/generation"
  printf '%s\n' "$out" >"$keep/system"
  # Boot the new generation once: a hang or a failed boot falls back to the previous one on
  # the next reset. It becomes the default only when confirmed (confirm-boot).
  if [ -n "$prev" ]; then bootloader default "$prev"; fi
  bootloader oneshot "$new"
  log "$token boot-staged $out: generation $new boots once, generation ${prev:-none} stays the default"
  ;;
reboot)
  log "$1 rebooting"
  reboot_now "$1"
  ;;
restart-pending)
  # The instance is about to be stopped and started from outside (its type changes): the same
  # marker a reboot leaves, so `check-boot` says "not rebooted yet" until the new boot.
  mkdir -p "$RUN/$1"
  log "$1 instance restart pending: $2"
  ;;
check-boot)
  token=$1 out=$2 settle=${3:-0}
  [ -d "$RUN/$token" ] && { echo "not rebooted yet" >&2; exit 3; }
  booted=$(readlink -f /run/booted-system 2>/dev/null || true)
  [ "$out" = - ] || [ "$booted" = "$out" ] || { echo "booted ${booted:-nothing}, not $out" >&2; exit 2; }
  if has_systemd; then
    # The watched units' baseline: their state once this boot has finished starting.
    if [ ! -f "$RUN/boot-check/watch" ]; then
      healthy /nonexistent 0 || exit $?
      mkdir -p "$RUN/boot-check"
      record_watch "$RUN/boot-check/watch"
    fi
    healthy "$RUN/boot-check/watch" "$settle" || exit $?
    printf 'switched_at=%s\n' "$(cut -d' ' -f1 "$RUN/boot-check/watch" | head -n 1)"
  fi
  ;;
confirm-boot)
  token=$1 out=$2 digest=$3
  keep=$STATE/boot-$token
  bootloader default "$(cat "$keep/generation")"
  record_confirmed "$out" "$digest"
  rm -rf "$keep"
  log "$token confirmed $out after rebooting into it"
  ;;
boot-rollback)
  token=$1 reason=$2
  keep=$STATE/boot-$token
  restore_files "$keep"
  prev=$(generation_of "$(cat "$keep/prev")")
  if [ -n "$prev" ]; then
    nix-env -p "$PROFILE" --switch-generation "$prev" >/dev/null 2>&1
    "$(readlink -f "$PROFILE")/bin/switch-to-configuration" boot
    bootloader default "$prev"
  fi
  outcome="rolled back at the boot loader to generation ${prev:-none} ($(readlink -f "$PROFILE")): $reason"
  rm -rf "$keep"
  log "$token $outcome"
  printf '%s\n' "$outcome"
  # Already running the previous generation (it fell back by itself): no second reboot.
  if [ "$(readlink -f /run/booted-system 2>/dev/null)" != "$(readlink -f "$PROFILE")" ]; then
    reboot_now "$token-rollback"
  fi
  ;;
forget-boot)
  # The host booted TOKEN's system and runs it, but nobody confirmed it (the deployer was lost
  # after the reboot): what a boot-rollback would restore is stale now; the next delivery
  # confirms or replaces the running system as it would any other.
  rm -rf "$STATE/boot-$1"
  log "$1 forgotten: the host runs the system it booted; its boot was never confirmed"
  ;;
retire)
  if has_systemd; then
    systemctl stop k3s.service
  fi
  # What was applied no longer runs (k3s stopped, its Node deleted): a host added back to the
  # stack with the same system must be switched again (which starts k3s), not only claimed.
  rm -f "$APPLIED"
  log "retired: removed from the cluster, k3s stopped"
  ;;
forget-etcd)
  # The cluster removed this server's member: its data names a member etcd refuses for good
  # ("the member has been permanently removed from the cluster"), so a host added back must
  # join as a new one. Set aside as k3s sets aside a tombstoned member's (pkg/etcd/etcd.go,
  # backupDirWithRetention: `<dir>-backup-<unix time>`), not deleted.
  if [ -d /var/lib/rancher/k3s/server/db/etcd ]; then
    mv /var/lib/rancher/k3s/server/db/etcd "/var/lib/rancher/k3s/server/db/etcd-backup-$(date +%s)"
    log "etcd member removed: its data set aside"
  fi
  ;;
*)
  echo "usage: hostctl.sh state|claim|previous|note-rollback|activate|check|confirm|rollback|expire|needs-reboot|boot-stage|reboot|check-boot|confirm-boot|boot-rollback|forget-boot|restart-pending|retire|forget-etcd ..." >&2
  exit 64
  ;;
esac
