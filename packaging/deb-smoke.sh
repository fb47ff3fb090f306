#!/usr/bin/env bash
# Runs inside the test root (test-deb.sh), where the openloop package is installed with apt.
set -euo pipefail
step() { echo "--- $*" >&2; }

step "openloop --version"
test "$(command -v openloop)" = /usr/bin/openloop
openloop --version
step "openloop --help"
openloop --help | grep -q "Quick start"
openloop service --help >/dev/null
step "man -w"
man -w openloop
for page in openloop-project openloop-task openloop-config openloop-promotion openloop-service; do
  man -w "$page" >/dev/null
done
MANWIDTH=80 man openloop 2>/dev/null | grep -q "OPENLOOP_PI_BIN"

step "units: in /usr/lib/systemd/user, enabled for nobody"
for unit in openloop@.service openloop@.timer openloop.target openloop-failure@.service; do
  test -f "/usr/lib/systemd/user/$unit"
done
if ls /etc/systemd/user/*.wants/openloop* /etc/systemd/user/openloop* 2>/dev/null; then
  echo "the package enabled units for all users" >&2
  exit 1
fi
step "systemd-analyze verify"
export XDG_RUNTIME_DIR=/run/user/0
mkdir -p "$XDG_RUNTIME_DIR/instances"
inst=$XDG_RUNTIME_DIR/instances
ln -sf /usr/lib/systemd/user/openloop@.service "$inst/openloop@sample.service"
ln -sf /usr/lib/systemd/user/openloop@.timer "$inst/openloop@sample.timer"
ln -sf /usr/lib/systemd/user/openloop-failure@.service "$inst/openloop-failure@x.service"
out=$(systemd-analyze --user verify --man=no "$inst/openloop@sample.service" \
  "$inst/openloop@sample.timer" /usr/lib/systemd/user/openloop.target \
  "$inst/openloop-failure@x.service" 2>&1) || { echo "$out" >&2; exit 1; }
# verify exits 0 on unknown keys: any output at all is a failure.
if [ -n "$out" ]; then echo "$out" >&2; exit 1; fi
# ...and it does read them here: an unknown key in a copy is reported.
sed 's/^Nice=10$/Nicety=10/' /usr/lib/systemd/user/openloop@.service >"$inst/broken@x.service"
systemd-analyze --user verify --man=no "$inst/broken@x.service" 2>&1 | grep -q Nicety

step "completions"
test -s /usr/share/bash-completion/completions/openloop
test -s /usr/share/zsh/vendor-completions/_openloop
test -s /usr/share/fish/vendor_completions.d/openloop.fish
bash -c 'source /usr/share/bash-completion/completions/openloop && complete -p openloop' >/dev/null
COMP_WORDS="openloop serv" COMP_CWORD=1 _OPENLOOP_COMPLETE=bash_complete openloop | grep -q service

step "doctor without pi"
doctor=$(openloop doctor --json || true)
echo "$doctor" | python3 -c '
import json, sys
checks = {c["name"]: c for c in json.load(sys.stdin)}
pi = checks["pi"]
assert not pi["ok"] and "OPENLOOP_PI_BIN" in pi["detail"] and "npm install" in pi["fix"], pi
'

step "run-once with a stand-in agent"
export GIT_AUTHOR_NAME=CI GIT_AUTHOR_EMAIL=ci@example.invalid
export GIT_COMMITTER_NAME=CI GIT_COMMITTER_EMAIL=ci@example.invalid
repo=/srv/sample
mkdir -p "$repo"
git -C "$repo" init -q -b main
echo "# sample" >"$repo/README.md"
git -C "$repo" add -A
git -C "$repo" commit -qm init
openloop project add sample "$repo" --init >/dev/null
python3 - "$repo/.openloop/project.json" <<'PY'
import json, sys
path = sys.argv[1]
data = json.load(open(path))
data["agent"] = {"type": "custom", "command": "sh -c 'cat >/dev/null; echo hello > hello.txt'"}
data["validation"] = {"lintCommand": "test -f hello.txt"}
json.dump(data, open(path, "w"))
PY
openloop project trust sample >/dev/null
openloop task add -p sample --title "Write hello.txt" --risk low-risk >/dev/null
rc=0
openloop run-once --project sample || rc=$?
echo "run-once exit $rc" >&2
test "$rc" = 0
python3 - "$repo/.openloop/tasks.json" <<'PY'
import json, sys
tasks = json.load(open(sys.argv[1]))["tasks"]
assert [t["status"] for t in tasks] == ["review"], tasks
PY
git -C "$repo" branch --list 'openloop/*' | grep -q .
branch=$(git -C "$repo" branch --list 'openloop/*' --format='%(refname:short)' | head -1)
test "$(git -C "$repo" show "$branch:hello.txt")" = hello
echo "deb-smoke: ok" >&2
