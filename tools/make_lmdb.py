#!/usr/bin/env python3
"""Build the paper's composited training and test data as Caffe LMDBs, resumably.

Thin wrapper over :mod:`dmpn.lmdb_builder`; see ``--help`` and that module's docstring for the
item layout (11 uint8 channels: image RGB, trimap, alpha, foreground RGB, background RGB).

    tools/make_lmdb.py --out data/demo --preset demo
    tools/make_lmdb.py --out /big/dmpn --originals ../shared/data/alphamatting_lowres \\
        --trimap-dir trimap1 --backgrounds /big/backgrounds --preset paper
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # a link to a tool too
# This repository's dmpn first: a venv made by another clone would import that clone's code.
sys.path.insert(0, REPO)

from dmpn.venv import use_repository_venv  # noqa: E402  (standard library only)
use_repository_venv(REPO)  # any python3 may start a tool: re-run under .venv, which has numpy, pycaffe

from dmpn.lmdb_builder import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
