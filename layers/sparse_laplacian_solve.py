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
from dmpn.layers.params import parse_param_str

DEFAULTS = {"c": 0.8, "shrink": 1}


class SparseLaplacianSolveLayer(caffe.Layer):
    def setup(self, bottom, top):
        if len(bottom) != 2 or len(top) != 1:
            raise ValueError("SparseLaplacianSolve: needs 2 bottoms (affinities, trimap) and 1 top, "
                             f"got {len(bottom)} and {len(top)}")
        self.p = parse_param_str(self, DEFAULTS)
        if self.p["c"] <= 0:
            raise ValueError(f"SparseLaplacianSolve: c must be > 0, got {self.p['c']}")
        self.systems = []

    def reshape(self, bottom, top):
        a, t = bottom[0].data.shape, bottom[1].data.shape
        if len(a) != 4 or a[1] != 2:
            raise ValueError(f"SparseLaplacianSolve: affinities must be N x 2 x H x W, got {a}")
        if len(t) != 4 or t[1] != 1 or t[0] != a[0] or t[2:] != a[2:]:
            raise ValueError(f"SparseLaplacianSolve: trimap must be {a[0]} x 1 x {a[2]} x {a[3]}, got {t}")
        top[0].reshape(a[0], 1, a[2], a[3])

    def forward(self, bottom, top):
        self.systems = []
        for i in range(bottom[0].num):
            where = f"SparseLaplacianSolve (item {i} of the batch)"
            s = P.Propagation(bottom[0].data[i], bottom[1].data[i, 0], self.p["c"],
                              self.p["shrink"], where=where)
            self.systems.append(s)
            top[0].data[i, 0] = s.solve()

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:  # asked for by force_backward: the trimap gets no gradient
            bottom[1].diff[...] = 0
        if not propagate_down[0]:
            return
        for i, s in enumerate(self.systems):
            bottom[0].diff[i] = s.backward(top[0].diff[i, 0])
