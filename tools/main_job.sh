#!/usr/bin/env bash
# README command 1: set up everything (tools/setup.sh), then the main job (dmpn/main_job.py):
# build a small composited dataset, train the slim net with the stock `caffe train` on the CPU
# for a bounded time, predict the held-out composites and score them against the baselines.
# Arguments go to the job: --out DIR, --originals DIR (real data), --minutes N.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The arguments first (dmpn.main_job parses them with the standard library alone, so any
# python3 of 3.7 or later will do before the set-up): --help or a bad argument answers at once,
# not after minutes of set-up. Exit 2 is a refused argument, 10 the help shown; anything else
# (no such python3, dmpn not importable by it) leaves the check to the job after the set-up.
PRECHECK=${PYTHON:-python3}
# The job as `python -m dmpn.main_job` would be, but with the repository first on sys.path where
# -m puts the caller's folder (a dmpn/ there would be imported instead); the caller's folder stays
# the working one, so relative --out and --originals mean what they say.
RUN_JOB='import os, runpy, sys
repo = sys.argv.pop(1)
sys.path[:] = [repo] + [p for p in sys.path if p not in ("", ".", os.getcwd())]
runpy.run_module("dmpn.main_job", run_name="__main__", alter_sys=True)'

if "$PRECHECK" -c 'import sys; sys.exit(sys.version_info < (3, 7))' >/dev/null 2>&1; then
  status=0
  said=$("$PRECHECK" -c "$RUN_JOB" "$REPO" --check-arguments "$@" 2>&1) \
    || status=$?
  case $status in
    0) ;;
    10) printf '%s\n' "$said"; exit 0 ;;  # --help (ARGUMENTS_ANSWERED)
    2) printf '%s\n' "$said" >&2; exit 2 ;;
    *) echo "main_job.sh: the early argument check did not run (exit $status); the job checks the arguments after the set-up" >&2 ;;
  esac
fi
bash "$REPO/tools/setup.sh"
exec "$REPO/.venv/bin/python" -c "$RUN_JOB" "$REPO" "$@"
