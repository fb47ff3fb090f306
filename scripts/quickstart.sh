#!/usr/bin/env bash
# Quick start on a throwaway sample repository: set up, link it, queue work, run one real
# iteration, look at the result, merge it. No API key needed: the "agent" here is a small
# script (agent.type=custom); with pi configured, the same commands drive pi.
# Uses its own OPENLOOP_HOME so your real configuration is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
work="$(mktemp -d -t openloop-quickstart.XXXXXX)"
export OPENLOOP_HOME="$work/home"
export GIT_AUTHOR_NAME=OpenLoop GIT_AUTHOR_EMAIL=quickstart@openloop.invalid
export GIT_COMMITTER_NAME=OpenLoop GIT_COMMITTER_EMAIL=quickstart@openloop.invalid
ol=("$PWD/.venv/bin/openloop")
repo="$work/sample"
mkdir -p "$repo/src"
printf 'def add(a, b):\n    return a + b\n' > "$repo/src/calc.py"
git -C "$repo" init -q -b main
git -C "$repo" add -A
git -C "$repo" commit -qm "sample"

# A stand-in agent: reads the prompt on stdin and adds the function the task asks for.
cat > "$work/agent.sh" <<'AGENT'
#!/bin/sh
cat > /dev/null
printf '\n\ndef subtract(a, b):\n    return a - b\n' >> src/calc.py
echo "Added subtract()."
AGENT
chmod +x "$work/agent.sh"

set -x
"${ol[@]}" project add sample "$repo" --init
"${ol[@]}" task add -p sample --title "Add a subtract function" --scope 'src/**' \
  --accept "src/calc.py has subtract(a, b)"
"${ol[@]}" task list -p sample --format table
{ set +x; } 2>/dev/null
# Point the project at the stand-in agent and a real check, then approve those commands.
python3 - "$repo/.openloop/project.json" "$work/agent.sh" <<'PY'
import json, sys
path, agent = sys.argv[1], sys.argv[2]
config = json.load(open(path))
config["agent"] = {"type": "custom", "command": agent}
config["validation"]["lintCommand"] = "python3 -m py_compile src/calc.py"
json.dump(config, open(path, "w"), indent=2)
PY
set -x
"${ol[@]}" project trust sample
"${ol[@]}" run-once -p sample --dry-run
"${ol[@]}" run-once -p sample
"${ol[@]}" promotion show -p sample --task add-a-subtract-function
"${ol[@]}" promotion apply -p sample --task add-a-subtract-function
git -C "$repo" log --oneline
"${ol[@]}" task show -p sample --task add-a-subtract-function
{ set +x; } 2>/dev/null
echo
echo "Sample repository: $repo (OPENLOOP_HOME=$OPENLOOP_HOME)"
echo "To schedule it: OPENLOOP_HOME=$OPENLOOP_HOME $PWD/.venv/bin/openloop service install,"
echo "then '... service start' (see README: Running unattended with systemd)."
