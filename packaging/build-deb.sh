#!/usr/bin/env bash
# Build the openloop .deb from this checkout in a Debian 13 (trixie) chroot (debootstrap, then
# `apt-get build-dep` on the source tree and `dpkg-buildpackage -b`). Debian 12 cannot build it:
# its pydantic is 1.x. Needs root. Prints the path of the .deb.
#   packaging/build-deb.sh [OUTDIR]        (default: dist/)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(dirname "$HERE")
# shellcheck source=SCRIPTDIR/chroot-lib.sh
. "$HERE/chroot-lib.sh"
OUT=$(mkdir -p "${1:-$TOP/dist}" && cd "${1:-$TOP/dist}" && pwd)
ol_need_root
ol_trap

VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$TOP/openloop/__init__.py")
ol_workdir
WORK=$OL_WORK
ROOTFS=$WORK/build
ol_make_root "$ROOTFS"
ol_mount "$ROOTFS"

# The tree as git sees it (tracked and new files, nothing ignored), debian/ from packaging/.
SRC=$ROOTFS/build/openloop-$VERSION
mkdir -p "$SRC"
(cd "$TOP" && git ls-files -z -co --exclude-standard | tar --null --no-recursion --ignore-failed-read -T - -cf -) | tar -xf - -C "$SRC"
rm -rf "$SRC/debian" && cp -a "$TOP/packaging/debian" "$SRC/debian"

ol_log "build dependencies (apt-get build-dep)"
ol_apt "$ROOTFS" update >/dev/null
ol_apt "$ROOTFS" install build-essential >/dev/null
ol_apt "$ROOTFS" build-dep "/build/openloop-$VERSION" >/dev/null
ol_log "dpkg-buildpackage -b -us -uc"
ol_chroot "$ROOTFS" sh -c "cd /build/openloop-$VERSION && dpkg-buildpackage -b -us -uc" \
  >"$WORK/build.log" 2>&1 || {
  tail -60 "$WORK/build.log" >&2
  exit 1
}
cp "$ROOTFS"/build/openloop_"$VERSION"-*_all.deb "$OUT/"
ls "$OUT"/openloop_"$VERSION"-*_all.deb
