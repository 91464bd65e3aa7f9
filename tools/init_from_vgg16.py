#!/usr/bin/env python3
"""Initialise the SegNet encoder from a VGG16 caffemodel. See dmpn/vgg_init.py."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # a link to a tool too
# This repository's dmpn first: a venv made by another clone would import that clone's code.
sys.path.insert(0, REPO)

from dmpn.venv import use_repository_venv  # noqa: E402  (standard library only)
use_repository_venv(REPO)  # any python3 may start a tool: re-run under .venv, which has numpy, pycaffe

from dmpn.vgg_init import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
