#!/usr/bin/env bash
# CI's packaging check, end to end: one debootstrap of Debian 13 (trixie) minbase shared by the
# build root and the install-test root; build the .deb (build-deb.sh), check its contents with
# dpkg-deb -c, install and use it (test-deb.sh). Prints the time of each phase. Needs root.
#   packaging/check-deb.sh [OUTDIR]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/chroot-lib.sh
. "$HERE/chroot-lib.sh"
ol_need_root
ol_trap
OUT=${1:-}
ol_workdir
WORK=$OL_WORK
[ -n "$OUT" ] || OUT=$WORK/out
t0=$(date +%s)
OPENLOOP_BASE_ROOT='' ol_make_root "$WORK/base"
t1=$(date +%s)
ol_log "debootstrap: $((t1 - t0))s"
export OPENLOOP_BASE_ROOT=$WORK/base
DEB=$("$HERE/build-deb.sh" "$OUT" | tail -1)
t2=$(date +%s)
ol_log "build: $((t2 - t1))s ($DEB)"
"$HERE/check-deb-contents.sh" "$DEB"
"$HERE/test-deb.sh" "$DEB"
t3=$(date +%s)
ol_log "install test: $((t3 - t2))s; total $((t3 - t0))s"
