#!/usr/bin/env bash
# Installs the pi coding agent that OpenLoop is tested against into a local prefix (never
# globally), so tests and demos use one known version regardless of what else is on the machine.
set -euo pipefail

PI_PACKAGE="@mariozechner/pi-coding-agent"
# 0.73.1 is the last release under this package name and the newest one that runs on Node 20.
PI_VERSION="0.73.1"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="${OPENLOOP_TOOLS_DIR:-${repo_root}/.tools}"
prefix="${tools_dir}/pi"
pi_bin="${prefix}/node_modules/.bin/pi"
installed_manifest="${prefix}/node_modules/${PI_PACKAGE}/package.json"

installed_version() {
    [[ -f "${installed_manifest}" ]] || return 0
    node -e 'process.stdout.write(require(process.argv[1]).version || "")' "${installed_manifest}"
}

for tool in node npm; do
    if ! command -v "${tool}" >/dev/null 2>&1; then
        echo "install-pi: '${tool}' not found on PATH; install Node.js >= 20 first" >&2
        exit 1
    fi
done

if [[ "$(installed_version)" == "${PI_VERSION}" && -x "${pi_bin}" ]]; then
    echo "install-pi: ${PI_PACKAGE}@${PI_VERSION} already installed" >&2
else
    echo "install-pi: installing ${PI_PACKAGE}@${PI_VERSION} into ${prefix}" >&2
    mkdir -p "${prefix}"
    npm install --prefix "${prefix}" --no-audit --no-fund "${PI_PACKAGE}@${PI_VERSION}" >&2
    if [[ "$(installed_version)" != "${PI_VERSION}" || ! -x "${pi_bin}" ]]; then
        echo "install-pi: install finished but ${pi_bin} (version ${PI_VERSION}) is missing" >&2
        exit 1
    fi
fi

echo "${pi_bin}"
