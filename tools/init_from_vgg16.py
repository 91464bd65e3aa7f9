#!/usr/bin/env python3
"""Initialise the SegNet encoder from a VGG16 caffemodel. See dmpn/vgg_init.py."""
import sys

from dmpn.vgg_init import main

if __name__ == "__main__":
    sys.exit(main())
