"""pycaffe layer ``AffinityExp``: w_ij = exp(clip(theta_1 . f_i + theta_2 . f_j + b)).

Mirrors the C++ layer (cuda/src/caffe/layers/affinity_exp_layer.cpp); the maths is
``dmpn.propagation``'s. bottom: features N x T x H x W; top: affinities N x 2 x H x W.
blobs[0]: 2 x T (theta_1; theta_2), blobs[1]: 1 (b).

    python_param { module: "dmpn.layers.affinity_exp" layer: "AffinityExpLayer"
                   param_str: '{"exponent_bound": 10,
                                "weight_filler": {"type": "gaussian", "std": 0.001},
                                "bias_filler": {"type": "constant", "value": 0}}' }

The fillers are caffe.proto's FillerParameter as JSON, with its defaults (type "constant",
value 0): the types "constant", "gaussian" (mean, std) and "uniform" (min, max).
"""
import caffe
import numpy as np

from dmpn import propagation as P
from dmpn.layers.params import check_not_empty, finite_param, layer_label, parse_param_str, with_defaults

DEFAULTS = {"exponent_bound": P.DEFAULT_EXPONENT_BOUND, "weight_filler": {}, "bias_filler": {}}
# caffe.proto's FillerParameter defaults, for the fields these types read
FILLER_DEFAULTS = {"type": "constant", "value": 0.0, "mean": 0.0, "std": 1.0, "min": 0.0, "max": 1.0}


def fill(filler, shape, rng, what, label="AffinityExp"):
    """An array of ``shape`` drawn as Caffe's filler ``filler`` (a dict) would draw it."""
    if not isinstance(filler, dict):
        raise ValueError(f"{label}: {what} must be a JSON object (FillerParameter), got {filler!r}")
    f = with_defaults(filler, FILLER_DEFAULTS, f"{label}: {what} has unknown field(s)")
    if f["type"] == "constant":
        return np.full(shape, float(f["value"]))
    if f["type"] == "gaussian":
        return rng.normal(float(f["mean"]), float(f["std"]), shape)
    if f["type"] == "uniform":
        return rng.uniform(float(f["min"]), float(f["max"]), shape)
    raise ValueError(f"{label}: {what} type {f['type']!r} is not supported here "
                     "(constant, gaussian, uniform)")


class AffinityExpLayer(caffe.Layer):
    TYPE = "AffinityExp"

    def setup(self, bottom, top):
        label = layer_label(self)
        if len(bottom) != 1 or len(top) != 1:
            raise ValueError(f"{label}: needs 1 bottom (features) and 1 top, got {len(bottom)} "
                             f"and {len(top)}")
        self.p = parse_param_str(self, DEFAULTS)
        # The C++ layer's range (LayerSetUp): 0 < exponent_bound <= kMaxExponentBound (80).
        self.p["exponent_bound"] = finite_param(
            self, "exponent_bound", self.p["exponent_bound"], above=0,
            maximum=P.MAX_EXPONENT_BOUND, why=" (a larger one lets float32 affinities overflow)")
        if len(self.blobs) == 0:  # not restored from a caffemodel
            t = bottom[0].channels
            rng = np.random.default_rng()
            self.blobs.add_blob(2, t)
            self.blobs.add_blob(1)
            self.blobs[0].data[...] = fill(self.p["weight_filler"], (2, t), rng, "weight_filler", label)
            self.blobs[1].data[...] = fill(self.p["bias_filler"], (1,), rng, "bias_filler", label)

    def reshape(self, bottom, top):
        check_not_empty(self, bottom)
        if bottom[0].data.ndim != 4:
            raise ValueError(f"{layer_label(self)}: bottom must be N x T x H x W, got "
                             f"{bottom[0].data.shape}")
        if self.blobs[0].data.shape != (2, bottom[0].channels):
            raise ValueError(f"{layer_label(self)}: blobs[0] is {self.blobs[0].data.shape}, features have "
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
