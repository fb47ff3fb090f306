#!/usr/bin/env bash
# Set up a development environment from a clean checkout on Debian/Ubuntu:
# system packages (when run as root), a virtualenv in .venv with OpenLoop and its test tools,
# and the pinned pi agent in .tools/ for the end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v git >/dev/null || need_apt+=(git)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
dpkg -s libsystemd-dev >/dev/null 2>&1 || need_apt+=(libsystemd-dev)
# systemd-python is built from source: a compiler and the Python headers.
command -v gcc >/dev/null || need_apt+=(gcc)
dpkg -s python3-dev >/dev/null 2>&1 || need_apt+=(python3-dev)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
# The system Python's venv module (the venv must be usable by the systemd tests' user).
if [ -x /usr/bin/python3 ]; then
  /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
else
  python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install: ${need_apt[*]} (e.g. sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi

# The venv's interpreter must be usable by other users too: the systemd tests run OpenLoop as an
# unprivileged user, and a pyenv Python under /root (mode 0700) is not. Prefer the system Python
# when it is new enough; PYTHON=... overrides.
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if /usr/bin/python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PYTHON=/usr/bin/python3
  fi
fi
if [ -x .venv/bin/python ] && ! .venv/bin/python -c 'import sys' 2>/dev/null; then
  rm -rf .venv
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,journal]'
# pi 0.73.1 needs Node.js >= 20.6 (Debian 12's own nodejs is 18).
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=6)?0:1)'; then
  echo "setup: Node.js >= 20.6 is needed for pi (found $(node --version)); install it from" \
       "nodejs.org or NodeSource, then re-run" >&2
  exit 1
fi
bash scripts/install-pi.sh >/dev/null
echo "setup: ready. Try: .venv/bin/openloop --help" >&2
