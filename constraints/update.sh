#!/usr/bin/env bash
# Re-lock: bash constraints/update.sh   (then run the test suite and commit constraints/cpu.txt)
# Resolves the newest releases of every dependency of the extras that CI installs, in a fresh
# virtual environment, against the torch pin of constraints/torch-cpu.txt, and writes the exact
# versions to constraints/cpu.txt (the lock that the README's set-up and .ci/run install from).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${COMPBENCH_LOCK_EXTRAS:-dev}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --disable-pip-version-check -c constraints/torch-cpu.txt -e ".[$EXTRAS]"
{
  echo "# The lock: exact versions of everything '.[${EXTRAS}]' installs, resolved $(date -u +%Y-%m-%d) on"
  echo "# Python $("$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())') by constraints/update.sh (which says how to upgrade it)."
  echo "# Used as a constraints file: pip install -c constraints/cpu.txt -e \".[dev]\""
  "$tmp/venv/bin/pip" freeze --exclude-editable --disable-pip-version-check
} > constraints/cpu.txt
echo "wrote constraints/cpu.txt ($(grep -vc '^#' constraints/cpu.txt) packages)"
