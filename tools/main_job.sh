#!/usr/bin/env bash
# README command 1: set up everything (tools/setup.sh), then the main job (dmpn/main_job.py):
# build a small composited dataset, train the slim net with the stock `caffe train` on the CPU
# for a bounded time, predict the held-out composites and score them against the baselines.
# Arguments go to the job: --out DIR, --originals DIR (real data), --minutes N.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$REPO/tools/setup.sh"
exec "$REPO/.venv/bin/python" -m dmpn.main_job "$@"
