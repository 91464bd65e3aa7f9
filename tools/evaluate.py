#!/usr/bin/env python3
"""Score alpha mattes with SAD, MSE, gradient and connectivity errors (Deep Image Matting's MATLAB
definitions), for prediction folders, a Caffe model, a Python predictor and baselines.

    tools/evaluate.py --pred DIR --gt DIR --trimap DIR [--json FILE]
    tools/evaluate.py --model deploy.prototxt --weights X.caffemodel --images DIR --gt DIR --trimap DIR [--gpu N]
    tools/evaluate.py --pred DIR --images DIR --gt DIR --trimap DIR --baselines cf,knn,handcrafted --figures DIR

See ``dmpn.evaluate`` (scoring) and ``dmpn.metrics`` (the four errors).
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # a link to a tool too
# This repository's dmpn first: a venv made by another clone would import that clone's code.
sys.path.insert(0, REPO)

from dmpn.venv import use_repository_venv  # noqa: E402  (standard library only)
use_repository_venv(REPO)  # any python3 may start a tool: re-run under .venv, which has numpy, pycaffe

from dmpn.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
