#!/usr/bin/env bash
# Install the openloop .deb with apt into a fresh Debian 13 (trixie) root made by debootstrap,
# and use it there: --version, --help, man -w, systemd-analyze verify on the installed units, and
# one run-once with a stand-in agent (agent.type custom: a shell command that writes a file) on
# a sample repository. Needs root.
#   packaging/test-deb.sh dist/openloop_<version>-1_all.deb
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/chroot-lib.sh
. "$HERE/chroot-lib.sh"
DEB=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
ol_need_root
ol_trap

ol_workdir
WORK=$OL_WORK
ROOTFS=$WORK/test
ol_make_root "$ROOTFS"
ol_mount "$ROOTFS"
cp "$DEB" "$ROOTFS/tmp/"
ol_log "apt-get install ./$(basename "$DEB") man-db systemd"
ol_apt "$ROOTFS" update >/dev/null
# Without recommends, then what the checks below need: man-db for man -w, systemd for
# systemd-analyze.
ol_apt "$ROOTFS" install "/tmp/$(basename "$DEB")" man-db systemd >"$WORK/apt.log" 2>&1 || {
  tail -40 "$WORK/apt.log" >&2
  exit 1
}
ol_log "checks inside the root"
cp "$HERE/deb-smoke.sh" "$ROOTFS/tmp/deb-smoke.sh"
ol_chroot "$ROOTFS" bash /tmp/deb-smoke.sh
ol_log "test-deb: all checks passed"
