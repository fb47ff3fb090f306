#!/usr/bin/env bash
# What the .deb must hold (dpkg-deb -c): the command, the units in /usr/lib/systemd/user, the
# man pages, the completions, the templates as package data; and no maintainer script that
# enables units for all users.
#   packaging/check-deb-contents.sh dist/openloop_<version>-1_all.deb
set -euo pipefail
DEB=$1
listing=$(dpkg-deb -c "$DEB" | awk '{print $6}' | sed 's|^\./|/|')
missing=0
for path in \
  /usr/bin/openloop \
  /usr/lib/systemd/user/openloop@.service \
  /usr/lib/systemd/user/openloop@.timer \
  /usr/lib/systemd/user/openloop.target \
  /usr/lib/systemd/user/openloop-failure@.service \
  /usr/share/man/man1/openloop.1.gz \
  /usr/share/man/man1/openloop-project.1.gz \
  /usr/share/man/man1/openloop-task.1.gz \
  /usr/share/man/man1/openloop-config.1.gz \
  /usr/share/man/man1/openloop-promotion.1.gz \
  /usr/share/man/man1/openloop-service.1.gz \
  /usr/share/bash-completion/completions/openloop \
  /usr/share/zsh/vendor-completions/_openloop \
  /usr/share/fish/vendor_completions.d/openloop.fish \
  /usr/lib/python3/dist-packages/openloop/__init__.py \
  /usr/lib/python3/dist-packages/openloop/_data/units/openloop@.service \
  /usr/share/doc/openloop/copyright; do
  grep -qxF "$path" <<<"$listing" || { echo "missing from the .deb: $path" >&2; missing=1; }
done
grep -q '^/usr/lib/python3/dist-packages/openloop/_data/templates/.' <<<"$listing" ||
  { echo "missing from the .deb: the templates (openloop/_data/templates/)" >&2; missing=1; }
if grep -q '^/etc/systemd/user/' <<<"$listing"; then
  echo "the .deb enables units for all users (/etc/systemd/user)" >&2
  missing=1
fi
ctrl=$(mktemp -d)
trap 'rm -rf "$ctrl"' EXIT
dpkg-deb -e "$DEB" "$ctrl"
if grep -qs -- '--user' "$ctrl"/postinst; then
  echo "postinst touches user units:" >&2
  cat "$ctrl/postinst" >&2
  missing=1
fi
[ "$missing" = 0 ]
echo "check-deb-contents: ok ($(grep -c . <<<"$listing") paths)" >&2
