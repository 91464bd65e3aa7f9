#!/usr/bin/env python3
"""Recompute a trained net's BatchNorm statistics for its final weights. See dmpn/bn_stats.py."""
import os
import sys

# This repository's dmpn first: a venv made by another clone would import that clone's code.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dmpn.bn_stats import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
