#!/usr/bin/env python3
"""Alpha mattes from image + trimap (files or folders) with a trained model. See dmpn/predict.py."""
import os
import sys

# This repository's dmpn first: a venv made by another clone would import that clone's code.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dmpn.predict import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
