#!/usr/bin/env python3
"""Writes prototxt/ from dmpn/net.py, or a dataset's net and solver (--solver-for). See
dmpn/make_prototxt.py."""
import os
import sys

# This repository's dmpn first: a venv made by another clone would import that clone's code.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dmpn.make_prototxt import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
