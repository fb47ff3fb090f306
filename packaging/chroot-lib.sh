# shellcheck shell=bash
# Sourced by build-deb.sh, test-deb.sh and check-deb.sh: Debian 13 (trixie) roots made with
# debootstrap, entered with chroot, and always cleaned up (mounts first) by an EXIT trap.
# Needs root. DEBIAN_MIRROR overrides debootstrap's default mirror; DEBIAN_SUITE the suite.

DEBIAN_SUITE=${DEBIAN_SUITE:-trixie}
OL_MOUNTS=()
OL_CLEAN=()

ol_log() { printf '%s %s\n' "[$(date +%T)]" "$*" >&2; }

ol_cleanup() {
  local i rc=0
  for ((i = ${#OL_MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${OL_MOUNTS[i]}" 2>/dev/null || umount -l "${OL_MOUNTS[i]}" || rc=1
  done
  OL_MOUNTS=()
  for dir in "${OL_CLEAN[@]}"; do
    # Never delete through a mount that is still there (a bound /dev would take the host's).
    if [ "$rc" = 0 ] && ! grep -qF " $dir/" /proc/mounts; then
      rm -rf --one-file-system "$dir"
    else
      echo "chroot-lib: left $dir in place: something is still mounted under it" >&2
    fi
  done
  OL_CLEAN=()
}

ol_trap() { trap 'ol_cleanup' EXIT; trap 'exit 130' INT TERM; }

ol_need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "$0: needs root (debootstrap, mount, chroot)" >&2
    exit 1
  fi
}

# apt-get on the host, once, for tools the scripts need (debootstrap, rpm, ...).
ol_host_tools() {
  local missing=() tool pkg
  for pair in "$@"; do
    tool=${pair%%:*} pkg=${pair#*:}
    command -v "$tool" >/dev/null || missing+=("$pkg")
  done
  [ ${#missing[@]} = 0 ] && return 0
  ol_log "installing on the host: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ol_workdir: a scratch directory in $OL_WORK, removed at exit (not in a $(...) subshell: the
# list of what to clean must reach the trap).
ol_workdir() {
  OL_WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/openloop-pkg.XXXXXX")
  OL_CLEAN+=("$OL_WORK")
}

# ol_make_root DIR: a trixie minbase root; a copy of $OPENLOOP_BASE_ROOT when that is set (so
# one debootstrap serves both the build and the install test).
ol_make_root() {
  local dir=$1
  if [ -n "${OPENLOOP_BASE_ROOT:-}" ]; then
    cp -a "$OPENLOOP_BASE_ROOT" "$dir"
  else
    ol_host_tools debootstrap:debootstrap
    ol_log "debootstrap --variant=minbase $DEBIAN_SUITE $dir"
    # shellcheck disable=SC2086
    debootstrap --variant=minbase "$DEBIAN_SUITE" "$dir" ${DEBIAN_MIRROR:-} >"$dir.debootstrap.log" 2>&1 || {
      tail -20 "$dir.debootstrap.log" >&2
      return 1
    }
    rm -f "$dir.debootstrap.log"
  fi
}

ol_mount() {
  local dir=$1
  mount -t proc proc "$dir/proc" && OL_MOUNTS+=("$dir/proc")
  mount --bind /dev "$dir/dev" && OL_MOUNTS+=("$dir/dev")
  mount -t tmpfs tmpfs "$dir/run" && OL_MOUNTS+=("$dir/run")
  cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
}

# ol_chroot DIR COMMAND...: run a command inside, with a plain environment.
ol_chroot() {
  local dir=$1
  shift
  chroot "$dir" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

ol_apt() {
  local dir=$1
  shift
  ol_chroot "$dir" apt-get -q -y -o APT::Install-Recommends=false -o Dpkg::Use-Pty=0 "$@"
}
