"""Edge-aware initialisation of the low-level branch and the affinity module.

With MSRA fillers and theta ~ N(0, 0.001) training starts from uniform affinities, i.e. plain
diffusion of the trimap, and a short CPU run spends most of its time learning that colour
edges should cut the propagation (the first thing every hand-crafted affinity knows). This
initialisation starts it from an edge-stopping diffusion instead; every weight stays trainable
and the net's definition is unchanged (the paper leaves initialisation open).

The three low-level convolutions are set so that two of their output channels are the L1
colour variation of each pixel towards its right and lower neighbours (A) and from its left and
upper neighbours (B):

    A_i = sum_c |I_c(i + x) - I_c(i)| + |I_c(i + y) - I_c(i)|
    B_j = sum_c |I_c(j) - I_c(j - x)| + |I_c(j) - I_c(j - y)|

built from ReLUs with |d| = 2 relu(d) - d: low1 holds S = R + G + B and the positive halves of
the forward differences (7 channels), low2 forms A and B from them, low3 passes both through.
AffinityExp gets theta_1 = -k on A and theta_2 = -k on B, so an edge (i, j) has the exponent
-k (A_i + B_j) + b: its own colour difference counts twice (|I(j) - I(i)| is in both), the
differences across it once. Other channels and theta entries keep their fillers. Convolutions
pad with zeros, so in the outermost pixel ring the image is seen as black beyond the border
(`edge_strengths` reproduces that exactly).

k = 4, b = -2 were chosen on training composites of the main job's generated data (held-out
SAD of the propagation alone, before any training: k = 1: 2.128, 2: 2.070, 3: 2.020, 4: 1.977,
uniform 2.197, hand-crafted 1.967). AffinityExp clamps the exponent to [-10, 10] (its
default exponent_bound), so an edge with A_i + B_j > 2 (a strong colour step) starts at e^-10,
cut, with no gradient through it to theta and b until other edges move them: 0.7 % of the edges
of six alphamatting.com images, 3.6 % of those in their unknown bands.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from dmpn import propagation
from dmpn.cli import (CAFFE_TOOL_ERRORS, DEPLOY_PROTOTXT, check_writable, finite_float, import_caffe_quietly,
                      run_tool, seed)

EDGE_K = 4.0
EDGE_BIAS = -2.0
LOWLEVEL = ("low1", "low2", "low3")
LOW1_CHANNELS = 7  # S, then relu(forward x difference) and relu(forward y difference) per colour
A_CHANNEL, B_CHANNEL = 0, 1  # in low2 and low3


def _shift(a, dy, dx):
    """a(y + dy, x + dx), zero outside (a convolution's zero padding)."""
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    out[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
        a[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    return out


def edge_strengths(image):
    """(A, B), each H x W: what the initialised low-level branch outputs on its two edge
    channels for an RGB image H x W x 3 in [0, 1] (float64 reference)."""
    im = np.asarray(image, dtype=np.float64)
    if im.ndim != 3 or im.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3, got shape {im.shape}")
    relu = lambda v: np.maximum(v, 0)
    s = im.sum(-1)
    px = relu(_shift(im, 0, 1) - im).sum(-1)
    py = relu(_shift(im, 1, 0) - im).sum(-1)
    a = relu(2 * (px + py) - (_shift(s, 0, 1) - s) - (_shift(s, 1, 0) - s))
    b = relu(2 * (_shift(px, 0, -1) + _shift(py, -1, 0)) - (s - _shift(s, 0, -1)) - (s - _shift(s, -1, 0)))
    return a, b


def edge_theta(k=EDGE_K):
    """theta (2 x 2) of AffinityExp restricted to the features (A, B): -k on A for the first
    pixel of an edge, -k on B for the second."""
    return np.array([[-k, 0.0], [0.0, -k]])


def edge_exponent(image, k=EDGE_K, bias=EDGE_BIAS):
    """The exponent -k (A_i + B_j) + b of AffinityExp's edges (2 x H x W, 0 where an edge has
    no second pixel) when every other feature is 0."""
    return propagation.affinity_exponent(np.stack(edge_strengths(image)), edge_theta(k), bias)


def init_edge_aware(net, k=EDGE_K, bias=EDGE_BIAS):
    """Sets low1-3 and AffinityExp's parameters of a pycaffe DeepMattePropNet in place."""
    for name in LOWLEVEL + ("affinity",):
        if name not in net.params:
            raise ValueError(f"the net has no layer {name!r}: not a DeepMattePropNet")
    w1, b1 = (p.data for p in net.params["low1"])
    if w1.shape[0] < LOW1_CHANNELS or w1.shape[1] < 3 or w1.shape[2:] != (3, 3):
        raise ValueError(f"low1 has weights {w1.shape}; the edge initialisation needs at least "
                         f"{LOW1_CHANNELS} 3x3 filters over RGB")
    # low1: S = R + G + B; relu(I_c(x + 1) - I_c(x)); relu(I_c(y + 1) - I_c(y)).
    w1[:LOW1_CHANNELS] = 0
    b1[:LOW1_CHANNELS] = 0
    for c in range(3):
        w1[0, c, 1, 1] = 1
        w1[1 + c, c, 1, 2], w1[1 + c, c, 1, 1] = 1, -1
        w1[4 + c, c, 2, 1], w1[4 + c, c, 1, 1] = 1, -1
    # low2: A and B with |d| = 2 relu(d) - d, where sum_c d_c is a difference of S.
    w2, b2 = (p.data for p in net.params["low2"])
    w2[[A_CHANNEL, B_CHANNEL]] = 0
    b2[[A_CHANNEL, B_CHANNEL]] = 0
    for ch in range(1, 7):
        w2[A_CHANNEL, ch, 1, 1] = 2
    w2[A_CHANNEL, 0, 1, 1], w2[A_CHANNEL, 0, 1, 2], w2[A_CHANNEL, 0, 2, 1] = 2, -1, -1
    for ch in range(1, 4):
        w2[B_CHANNEL, ch, 1, 0] = 2   # relu of the x difference ending at j
    for ch in range(4, 7):
        w2[B_CHANNEL, ch, 0, 1] = 2   # relu of the y difference ending at j
    w2[B_CHANNEL, 0, 1, 1], w2[B_CHANNEL, 0, 1, 0], w2[B_CHANNEL, 0, 0, 1] = -2, 1, 1
    # low3: pass A and B through (ReLU of a non-negative value is itself).
    w3, b3 = (p.data for p in net.params["low3"])
    for ch in (A_CHANNEL, B_CHANNEL):
        w3[ch] = 0
        w3[ch, ch, 1, 1] = 1
        b3[ch] = 0
    theta, b = (p.data for p in net.params["affinity"])
    low_offset = theta.shape[1] - w3.shape[0]  # features = concat(semantic, low-level)
    theta[0, low_offset + A_CHANNEL] = -k
    theta[1, low_offset + B_CHANNEL] = -k
    b[...] = bias


def write_edge_init(net_prototxt, out_caffemodel, weights=None, k=EDGE_K, bias=EDGE_BIAS, seed=None):
    """Loads the net (with `weights` if given, else its fillers, seeded), initialises it and
    saves a .caffemodel for `caffe train -weights`. The prototxt and the weights are checked
    first (dmpn.caffe_checks: InputError naming the file where Caffe would abort)."""
    caffe = import_caffe_quietly()  # without its net set-up log (GLOG_minloglevel=0 keeps it)
    from dmpn.caffe_checks import check_prototxt, check_weights
    from dmpn.imageio import save_caffemodel
    check_prototxt(net_prototxt)
    if seed is not None:
        caffe.set_random_seed(int(seed))
    net = caffe.Net(os.fspath(net_prototxt), caffe.TEST)
    if weights:
        check_weights(weights, net, net_path=net_prototxt)
        net.copy_from(os.fspath(weights))
    init_edge_aware(net, k, bias)
    save_caffemodel(net, out_caffemodel)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", default=DEPLOY_PROTOTXT,
                    help="the net (any width; default: prototxt/deploy.prototxt of this repository)")
    ap.add_argument("--weights", help="start from this .caffemodel (e.g. tools/init_from_vgg16.py's) "
                    "instead of the fillers")
    ap.add_argument("--out", required=True, help="the .caffemodel to write (use with caffe train -weights)")
    ap.add_argument("--k", type=finite_float, default=EDGE_K, help=f"edge sharpness k (default {EDGE_K:g})")
    ap.add_argument("--bias", type=finite_float, default=EDGE_BIAS, help=f"affinity bias b (default {EDGE_BIAS:g})")
    ap.add_argument("--seed", type=seed, default=0, help="seed of the fillers of the other weights "
                    "(0 <= seed < 2**32)")
    a = ap.parse_args(argv)

    def work():
        check_writable(a.out, folder=False)  # before the net is built
        write_edge_init(a.net, a.out, a.weights, a.k, a.bias, a.seed)
        print(f"wrote {a.out}: low-level branch and AffinityExp start as an edge-stopping "
              f"diffusion (k {a.k:g}, b {a.bias:g})")
    return run_tool("init_edge_aware", work, CAFFE_TOOL_ERRORS)
