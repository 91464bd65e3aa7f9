#!/usr/bin/env python3
"""Recompute a trained net's BatchNorm statistics for its final weights. See dmpn/bn_stats.py."""
import sys

from dmpn.bn_stats import main

if __name__ == "__main__":
    sys.exit(main())
