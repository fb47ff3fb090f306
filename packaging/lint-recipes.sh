#!/usr/bin/env bash
# Lint the RPM spec and the PKGBUILD with what Debian packages: rpmlint and `rpmspec -P` (rpm),
# `makepkg --printsrcinfo` (makepkg, run as nobody: makepkg refuses root) and bash -n. namcap and
# Fedora's pyproject macros are not in Debian, so neither recipe is built here. Needs root to
# install the tools when they are missing.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/chroot-lib.sh
. "$HERE/chroot-lib.sh"
ol_host_tools rpmlint:rpmlint rpmspec:rpm makepkg:makepkg pacman:pacman-package-manager

spec=$HERE/rpm/openloop.spec
echo "--- rpmlint $spec" >&2
rpmlint "$spec"
echo "--- rpmspec -P $spec" >&2
parsed=$(rpmspec -P --define '_userunitdir /usr/lib/systemd/user' "$spec")
grep -q '^Version: *0\|^Version:' <<<"$parsed"
grep -q '/usr/lib/systemd/user/openloop@.service' <<<"$parsed"

pkgbuild=$HERE/arch/PKGBUILD
echo "--- bash -n $pkgbuild; makepkg --printsrcinfo" >&2
bash -n "$pkgbuild"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$pkgbuild" "$tmp/PKGBUILD"
chmod -R a+rwX "$tmp"
if [ "$(id -u)" = 0 ]; then
  srcinfo=$(cd "$tmp" && setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME="$tmp" makepkg --printsrcinfo)
else
  srcinfo=$(cd "$tmp" && makepkg --printsrcinfo)
fi
grep -q 'pkgver = ' <<<"$srcinfo"
echo "$srcinfo" >&2
echo "lint-recipes: ok" >&2
