#!/usr/bin/env python3
"""Draw a `caffe train` log's loss, test outputs and learning rate as a PNG. See dmpn/train_log.py."""
import os
import sys

# This repository's dmpn first: a venv made by another clone would import that clone's code.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dmpn.train_log import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
