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
from dmpn.layers.params import check_not_empty, finite_param, layer_label, parse_param_str

DEFAULTS = dict(M.DEFAULTS)


def _data(blobs):
    # pycaffe's blob vectors support indexing, not iteration
    return [blobs[i].data for i in range(len(blobs))]


class MattingLossLayer(caffe.Layer):
    TYPE = "MattingLoss"

    def setup(self, bottom, top):
        self.where = layer_label(self)
        if len(bottom) != 6 or len(top) != 1:
            raise ValueError(f"{self.where}: needs 6 bottoms (predicted alpha, true alpha, trimap, "
                             f"foreground, background, image) and 1 top, got {len(bottom)} and {len(top)}")
        self.p = parse_param_str(self, DEFAULTS)
        # The C++ layer's rules (LayerSetUp): eps finite > 0 (with 0, a residual of 0 divides
        # by sqrt(0) in the gradient), the weights finite >= 0.
        self.p["eps"] = finite_param(self, "eps", self.p["eps"], above=0)
        for k in ("alpha_weight", "composition_weight"):
            self.p[k] = finite_param(self, k, self.p[k], minimum=0)

    def reshape(self, bottom, top):
        check_not_empty(self, bottom)
        M.check_shapes(*_data(bottom), where=self.where)
        top[0].reshape()  # a scalar, as BVLC's loss layers

    def forward(self, bottom, top):
        top[0].data[...] = M.matting_loss_forward(*_data(bottom), where=self.where, **self.p)

    def backward(self, top, propagate_down, bottom):
        for b in range(1, 6):
            if propagate_down[b]:
                bottom[b].diff[...] = 0
        if propagate_down[0]:
            bottom[0].diff[...] = M.matting_loss_backward(
                *_data(bottom), top_diff=top[0].diff.flat[0], where=self.where, **self.p)
