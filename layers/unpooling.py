"""pycaffe layer ``Unpooling``: SegNet-style unpooling with the argmax mask of MAX Pooling.

Mirrors the C++ layer (cuda/src/caffe/layers/unpooling_layer.cpp); the maths is
``dmpn.unpooling``'s. bottom[0]: pooled values N x C x h x w, bottom[1]: the mask from Pooling's
second top (same shape), optional bottom[2]: a blob whose H x W is the output size. top:
N x C x H x W. No gradient to the mask or the reference (their diffs are set to 0 when asked).

    python_param { module: "dmpn.layers.unpooling" layer: "UnpoolingLayer"
                   param_str: '{"out_height": 0, "out_width": 0}' }
"""
import caffe
import numpy as np

from dmpn import unpooling as U
from dmpn.layers.params import (INT32_MAX, check_not_empty, layer_label, parse_param_str,
                                whole_param)

DEFAULTS = {"out_height": 0, "out_width": 0}


class UnpoolingLayer(caffe.Layer):
    TYPE = "Unpooling"

    def setup(self, bottom, top):
        if len(bottom) not in (2, 3) or len(top) != 1:
            raise ValueError(f"{layer_label(self)}: needs 2 or 3 bottoms (values, mask[, size reference]) and "
                             f"1 top, got {len(bottom)} and {len(top)}")
        self.p = parse_param_str(self, DEFAULTS)
        for k in DEFAULTS:
            self.p[k] = whole_param(self, k, self.p[k], 0, INT32_MAX)

    def reshape(self, bottom, top):
        check_not_empty(self, bottom)
        v, m = bottom[0].data.shape, bottom[1].data.shape
        if len(v) != 4 or m != v:
            raise U.UnpoolingError(f"{layer_label(self)}: the mask (bottom[1]) is {m}, the pooled values "
                                   f"(bottom[0]) are {v}; they must be the same N x C x h x w")
        ref = None
        if len(bottom) > 2:
            if bottom[2].data.ndim != 4:
                raise ValueError(f"{layer_label(self)}: the size reference (bottom[2]) must be 4-D, got "
                                 f"{bottom[2].data.shape}")
            ref = bottom[2].data.shape[2:]
        self.out_hw = U.output_size(v[2:], self.p["out_height"], self.p["out_width"], ref)
        U.check_output_plane(self.out_hw, bottom[1].data.dtype == np.float32, layer_label(self))
        top[0].reshape(v[0], v[1], *self.out_hw)

    def forward(self, bottom, top):
        top[0].data[...] = U.unpool_forward(bottom[0].data, bottom[1].data, self.out_hw,
                                            layer_label(self))

    def backward(self, top, propagate_down, bottom):
        for b in range(1, len(bottom)):
            if propagate_down[b]:
                bottom[b].diff[...] = 0
        if propagate_down[0]:
            bottom[0].diff[...] = U.unpool_backward(top[0].diff, bottom[1].data, layer_label(self))
