#!/usr/bin/env bash
# README command 2: set up everything (tools/setup.sh: Debian packages, .venv, the cached
# Caffe build) and run the whole test suite: Python tests and our C++ layer tests.
# Extra arguments go to pytest (e.g. -k solve, -x, or test files: then only those run).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$REPO/tools/setup.sh"
# Called from another folder, paths relative to it (a test file, --basetemp DIR) are made
# absolute, since pytest runs from the repository root.
args=()
for a in "$@"; do
  if [[ $PWD != "$REPO" && $a != -* && $a != /* && -e ${a%%::*} ]]; then a="$PWD/$a"; fi
  args+=("$a")
done
cd "$REPO"
export DMPN_REQUIRE_CAFFE=1
# testpaths: pytest runs tests/ when no test file or folder is named, and only those named
# otherwise (an option's value that happens to be a path, as in --basetemp DIR, is not one).
exec "$REPO/.venv/bin/python" -m pytest -o testpaths=tests -ra "${args[@]}"
