#!/usr/bin/env python3
"""Start the low-level branch and AffinityExp as an edge-stopping diffusion. See dmpn/edge_init.py."""
import sys

from dmpn.edge_init import main

if __name__ == "__main__":
    sys.exit(main())
