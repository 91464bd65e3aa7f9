#!/usr/bin/env python3
"""Start the low-level branch and AffinityExp as an edge-stopping diffusion. See dmpn/edge_init.py."""
import os
import sys

# This repository's dmpn first: a venv made by another clone would import that clone's code.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dmpn.edge_init import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
