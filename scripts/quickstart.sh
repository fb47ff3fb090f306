#!/usr/bin/env bash
# Quick start on a throwaway sample repository: set up, link it, queue work, look at it.
# Uses its own OPENLOOP_HOME so your real configuration is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
work="$(mktemp -d -t openloop-quickstart.XXXXXX)"
export OPENLOOP_HOME="$work/home"
ol=(.venv/bin/openloop)
repo="$work/sample"
mkdir -p "$repo/src"
printf 'def add(a, b):\n    return a + b\n' > "$repo/src/calc.py"
printf '[tool.pytest.ini_options]\n[tool.ruff]\n' > "$repo/pyproject.toml"
git -C "$repo" init -q -b main
git -C "$repo" add -A
git -C "$repo" -c user.name=OpenLoop -c user.email=quickstart@openloop.invalid commit -qm "sample"

set -x
"${ol[@]}" project add sample "$repo" --init
"${ol[@]}" task add -p sample --title "Add a subtract function" --risk low-risk --scope 'src/**' \
  --accept "src/calc.py has subtract(a, b)"
"${ol[@]}" task add -p sample --title "Document calc.py" --kind docs --priority 2
"${ol[@]}" task list -p sample --format table
"${ol[@]}" task show -p sample --task add-a-subtract-function
"${ol[@]}" config project-show sample
{ set +x; } 2>/dev/null
echo "Sample repository: $repo (OPENLOOP_HOME=$OPENLOOP_HOME)"
