#!/usr/bin/env python3
"""Writes prototxt/ (train_val, deploy and solver, paper-size and slim, C++ and Python layer
flavours) from the one definition in dmpn/net.py. tests/test_net.py fails when the committed
files drift from it."""
import argparse
import os
import sys

from dmpn.net import write_files


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "prototxt"),
                    help="folder to write (default: the repository's prototxt/)")
    a = ap.parse_args(argv)
    for name in write_files(a.out):
        print(os.path.join(a.out, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
