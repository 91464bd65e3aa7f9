"""pycaffe layer ``AffinityExp``: w_ij = exp(clip(theta_1 . f_i + theta_2 . f_j + b)).

Mirrors the C++ layer (cuda/src/caffe/layers/affinity_exp_layer.cpp); the maths is
``dmpn.propagation``'s. bottom: features N x T x H x W; top: affinities N x 2 x H x W.
blobs[0]: 2 x T (theta_1; theta_2), blobs[1]: 1 (b).

    python_param { module: "dmpn.layers.affinity_exp" layer: "AffinityExpLayer"
                   param_str: '{"exponent_bound": 10, "weight_std": 0.01, "bias": 0}' }
"""
import caffe
import numpy as np

from dmpn import propagation as P
from dmpn.layers.params import parse_param_str

DEFAULTS = {"exponent_bound": P.DEFAULT_EXPONENT_BOUND, "weight_std": 0.01, "bias": 0.0, "seed": None}


class AffinityExpLayer(caffe.Layer):
    def setup(self, bottom, top):
        if len(bottom) != 1 or len(top) != 1:
            raise ValueError(f"AffinityExp layer {self.__dict__.get('name', '')}: needs 1 bottom "
                             f"(features) and 1 top, got {len(bottom)} and {len(top)}")
        self.p = parse_param_str(self, DEFAULTS)
        if len(self.blobs) == 0:  # not restored from a caffemodel
            t = bottom[0].channels
            rng = np.random.default_rng(self.p["seed"])
            self.blobs.add_blob(2, t)
            self.blobs.add_blob(1)
            self.blobs[0].data[...] = rng.normal(0.0, self.p["weight_std"], (2, t))
            self.blobs[1].data[...] = self.p["bias"]

    def reshape(self, bottom, top):
        if bottom[0].data.ndim != 4:
            raise ValueError(f"AffinityExp: bottom must be N x T x H x W, got {bottom[0].data.shape}")
        if self.blobs[0].data.shape != (2, bottom[0].channels):
            raise ValueError(f"AffinityExp: blobs[0] is {self.blobs[0].data.shape}, features have "
                             f"{bottom[0].channels} channels (expected 2 x {bottom[0].channels})")
        n, _, h, w = bottom[0].data.shape
        top[0].reshape(n, 2, h, w)

    def forward(self, bottom, top):
        theta, b = self.blobs[0].data, float(self.blobs[1].data[0])
        for i in range(bottom[0].num):
            top[0].data[i] = P.affinity_exp_forward(bottom[0].data[i], theta, b,
                                                    self.p["exponent_bound"])

    def backward(self, top, propagate_down, bottom):
        theta, b = self.blobs[0].data, float(self.blobs[1].data[0])
        for i in range(bottom[0].num):
            df, dth, db = P.affinity_exp_backward(bottom[0].data[i], theta, b, top[0].diff[i],
                                                  self.p["exponent_bound"])
            if propagate_down[0]:
                bottom[0].diff[i] = df
            self.blobs[0].diff[...] += dth  # Caffe accumulates parameter gradients
            self.blobs[1].diff[...] += db
