#!/usr/bin/env python3
"""Forward + backward time of SparseLaplacianSolve (C++ CPU, CUDA with --gpu, Python) against
scipy's splu factor + two solves, in one process. See dmpn/bench.py."""
import sys

from dmpn.bench import main

if __name__ == "__main__":
    sys.exit(main())
