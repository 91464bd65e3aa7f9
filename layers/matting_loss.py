"""pycaffe layer ``MattingLoss``: the paper's alpha + composition loss over the unknown region.

Mirrors the C++ layer (cuda/src/caffe/layers/matting_loss_layer.cpp); the maths is
``dmpn.matting_loss``'s. bottoms: predicted alpha, true alpha, trimap (N x 1 x H x W each),
foreground, background, composited image (N x 3 x H x W each). top: the scalar loss. Give it
``loss_weight: 1`` in the prototxt (a Python layer has no default loss weight); backward scales
by top[0].diff, which Caffe sets to that weight. Only the prediction gets a gradient: pycaffe
cannot refuse force_backward per bottom, so the other bottoms' diffs are set to 0 when asked.

    python_param { module: "dmpn.layers.matting_loss" layer: "MattingLossLayer"
                   param_str: '{"eps": 1e-12, "alpha_weight": 0.5, "composition_weight": 0.5}' }
"""
import caffe

from dmpn import matting_loss as M
from dmpn.layers.params import parse_param_str

DEFAULTS = dict(M.DEFAULTS)


def _data(blobs):
    # pycaffe's blob vectors support indexing, not iteration
    return [blobs[i].data for i in range(len(blobs))]


class MattingLossLayer(caffe.Layer):
    def setup(self, bottom, top):
        if len(bottom) != 6 or len(top) != 1:
            raise ValueError("MattingLoss: needs 6 bottoms (predicted alpha, true alpha, trimap, "
                             f"foreground, background, image) and 1 top, got {len(bottom)} and {len(top)}")
        self.p = parse_param_str(self, DEFAULTS)
        if self.p["eps"] < 0 or self.p["alpha_weight"] < 0 or self.p["composition_weight"] < 0:
            raise ValueError(f"MattingLoss: eps and the weights must be >= 0, got {self.p}")

    def reshape(self, bottom, top):
        M.check_shapes(*_data(bottom))
        top[0].reshape()  # a scalar, as BVLC's loss layers

    def forward(self, bottom, top):
        top[0].data[...] = M.matting_loss_forward(*_data(bottom), **self.p)

    def backward(self, top, propagate_down, bottom):
        for b in range(1, 6):
            if propagate_down[b]:
                bottom[b].diff[...] = 0
        if propagate_down[0]:
            bottom[0].diff[...] = M.matting_loss_backward(
                *_data(bottom), top_diff=top[0].diff.flat[0], **self.p)
