#!/usr/bin/env python3
"""Alpha mattes from image + trimap (files or folders) with a trained model. See dmpn/predict.py."""
import sys

from dmpn.predict import main

if __name__ == "__main__":
    sys.exit(main())
