"""pycaffe layer ``SparseLaplacianSolve``: alpha = (L + C)^-1 C alpha*.

Mirrors the C++ layer (cuda/src/caffe/layers/sparse_laplacian_solve_layer.cpp) with
``dmpn.propagation``'s exact float64 maths (a sparse LU factorisation per image, reused by the
backward solve). bottom[0]: affinities N x 2 x H x W, bottom[1]: trimap N x 1 x H x W in [0, 1];
top: alpha N x 1 x H x W. No gradient to the trimap.

    python_param { module: "dmpn.layers.sparse_laplacian_solve"
                   layer: "SparseLaplacianSolveLayer" param_str: '{"c": 0.8, "shrink": 1}' }
"""
import caffe

from dmpn import propagation as P
from dmpn.layers.params import check_not_empty, finite_param, layer_label, parse_param_str, whole_param

DEFAULTS = {"c": 0.8, "shrink": 1}


class SparseLaplacianSolveLayer(caffe.Layer):
    TYPE = "SparseLaplacianSolve"

    def setup(self, bottom, top):
        if len(bottom) != 2 or len(top) != 1:
            raise ValueError(f"{layer_label(self)}: needs 2 bottoms (affinities, trimap) and 1 top, "
                             f"got {len(bottom)} and {len(top)}")
        self.p = parse_param_str(self, DEFAULTS)
        # The C++ layer's rules (LayerSetUp): c finite > 0, shrink a whole number >= 1.
        self.p["c"] = finite_param(self, "c", self.p["c"], above=0)
        self.p["shrink"] = whole_param(self, "shrink", self.p["shrink"], 1)
        self.systems = []
        self.solved_shape = None  # the affinities' shape at the last forward

    def reshape(self, bottom, top):
        check_not_empty(self, bottom)
        a, t = bottom[0].data.shape, bottom[1].data.shape
        label = layer_label(self)
        if len(a) != 4 or a[1] != 2:
            raise ValueError(f"{label}: affinities must be N x 2 x H x W, got {a}")
        if len(t) != 4 or t[1] != 1 or t[0] != a[0] or t[2:] != a[2:]:
            raise ValueError(f"{label}: trimap must be {a[0]} x 1 x {a[2]} x {a[3]}, got {t}")
        P.check_shrink(self.p["shrink"], a[2], a[3], where=label)
        top[0].reshape(a[0], 1, a[2], a[3])

    def forward(self, bottom, top):
        self.systems = []
        self.solved_shape = bottom[0].data.shape
        for i in range(bottom[0].num):
            where = f"{layer_label(self)}, batch item {i}"
            s = P.Propagation(bottom[0].data[i], bottom[1].data[i, 0], self.p["c"],
                              self.p["shrink"], where=where)
            self.systems.append(s)
            top[0].data[i, 0] = s.solve()

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:  # asked for by force_backward: the trimap gets no gradient
            bottom[1].diff[...] = 0
        if not propagate_down[0]:
            return
        # backward reuses the forward's systems (as the C++ layer: CheckForwardMatches)
        label, shape = layer_label(self), bottom[0].data.shape
        if self.solved_shape is None:
            raise ValueError(f"{label}: Backward without a Forward")
        if shape != self.solved_shape:
            raise ValueError(f"{label}: Backward without a Forward at this shape: the last Forward "
                             f"solved affinities {' x '.join(map(str, self.solved_shape))}, "
                             f"bottom[0] is now {' x '.join(map(str, shape))} (a Reshape in between)")
        for i, s in enumerate(self.systems):
            bottom[0].diff[i] = s.backward(top[0].diff[i, 0])
