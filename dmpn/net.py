"""DeepMattePropNet's network (Wang et al., IJCAI 2018, Sec. 3), generated with Caffe's NetSpec
from this one definition: the paper-size net and a slim net for CPU runs differ only in width,
and the C++ and Python flavours of AffinityExp / SparseLaplacianSolve only in layer type.

Choices the paper leaves open (and why):

* Ts = 64 semantic features: SegNet's last decoder block has 64 channels; its classifier
  conv1_1_D (a 3x3 conv to class scores, no BatchNorm or ReLU) becomes a 3x3 conv to Ts features
  with BatchNorm and ReLU like the decoder's others (the paper: each decoder layer "corresponds
  to one encoder layer"), and those features go to the affinity module.
* Tl = 64 low-level features: three 3x3 convs (+ReLU) at full resolution, as wide as VGG's
  first block, so that colour edges reach the affinities undiluted.
* So T = 128 and the affinity module has 2T + 1 = 257 parameters.
* Training crops 320 x 320 (a multiple of 32 for SegNet's five 2x2 poolings; large enough to
  hold an unknown band and its known context), batch 4 (the paper gives none; the paper-size
  net's blobs and their diffs take 3.9 GB at batch 4, before BatchNorm's and im2col's buffers:
  not measured on a GPU yet).
* Initialisation: MSRA (He) for the convolutions, which suits ReLU nets trained from scratch;
  AffinityExp theta ~ N(0, 0.001), b = 0, so training starts from near-uniform affinities
  (plain diffusion of the trimap). `tools/init_from_vgg16.py` starts the encoder from VGG16;
  `tools/init_edge_aware.py` starts low1-3 and AffinityExp as an edge-stopping diffusion
  (dmpn/edge_init.py; the main job's default).
* BatchNorm is BVLC's `BatchNorm` + `Scale(bias_term: true)`.
* Weight decay 0.0005 (the paper gives none; Caffe's usual value) on every learned blob (Caffe's
  default decay_mult 1: the convolutions, the low-level convolutions' biases, the Scale layers
  after each BatchNorm), none on AffinityExp's theta and b: decay pulls theta to 0, i.e. to uniform affinities (plain diffusion
  of the trimap), and in our CPU runs it was as large as the loss gradient on theta.

The LMDB items (tools/make_lmdb.py) hold 11 channels: image RGB, trimap, alpha, foreground RGB,
background RGB (uint8); the Data layer scales them by 1/255 and crops and mirrors them together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from dmpn.datum import CHANNEL_ORDER, ITEM_SLICE_POINTS  # image 0-2 | trimap 3 | alpha 4 | fg 5-7 | bg 8-10
from dmpn.propagation import DEFAULT_EXPONENT_BOUND
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


@dataclass
class NetConfig:
    width: float = 1.0          # channel multiplier: 1 = the paper's SegNet-VGG16
    semantic_features: int = 64  # Ts (before the width multiplier)
    lowlevel_features: int = 64  # Tl (before the width multiplier)
    crop: int = 320
    batch: int = 4
    flavour: str = "cpp"         # "cpp" or "python" AffinityExp / SparseLaplacianSolve
    c: float = 0.8
    # AffinityExp's exponent in [-10, 10] (the layer's default): at 20, weights spanning e^40
    # stalled CG at relative residuals 1e-7 to 2e-6 (tolerance 1e-8) on real images, twice
    # within 90 iterations of the same snapshot, and training stopped; at 10 the same resumed
    # run went 400 iterations.
    exponent_bound: float = DEFAULT_EXPONENT_BOUND
    shrink: int = 1
    tolerance: float = 1e-8
    affinity_lr_mult: float = 1.0  # learning-rate multiplier of AffinityExp's theta and b

    def ch(self, n):
        return max(4, int(round(n * self.width)))


def _caffe():
    import caffe
    from caffe import layers as L, params as P
    return caffe, L, P


def conv_bn_relu(n, name, bottom, channels):
    _, L, _ = _caffe()
    # No convolution bias: the BatchNorm after it removes any constant (its Scale has one).
    setattr(n, name, L.Convolution(bottom, num_output=channels, kernel_size=3, pad=1,
                                   bias_term=False, weight_filler=dict(type="msra")))
    top = getattr(n, name)
    setattr(n, name + "_bn", L.BatchNorm(top, in_place=True))
    setattr(n, name + "_scale", L.Scale(top, bias_term=True, in_place=True))
    setattr(n, name + "_relu", L.ReLU(top, in_place=True))
    return top


def semantic_branch(n, data, cfg):
    """SegNet on VGG16: 13 conv+BN+ReLU with 5 max-poolings keeping their argmax, mirrored
    decoder that unpools with those indices (our Unpooling layer; bottom[2] gives the size)."""
    _, L, P = _caffe()
    x = data
    skips = []
    for b, (width, reps) in enumerate(VGG16_BLOCKS, start=1):
        for r in range(1, reps + 1):
            x = conv_bn_relu(n, f"conv{b}_{r}", x, cfg.ch(width))
        pooled, mask = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=2, stride=2, ntop=2)
        setattr(n, f"pool{b}", pooled)
        setattr(n, f"pool{b}_mask", mask)
        skips.append((x, mask))
        x = pooled
    decoder_out = {5: 512, 4: 256, 3: 128, 2: 64, 1: cfg.semantic_features}
    for b in range(5, 0, -1):
        width, reps = VGG16_BLOCKS[b - 1]
        ref, mask = skips[b - 1]
        x = L.Unpooling(x, mask, ref)
        setattr(n, f"unpool{b}", x)
        for r in range(reps, 0, -1):
            out = cfg.ch(width) if r > 1 else cfg.ch(decoder_out[b])
            x = conv_bn_relu(n, f"conv{b}_{r}_D", x, out)
    return x


def lowlevel_branch(n, data, cfg):
    _, L, _ = _caffe()
    x = data
    for i in range(1, 4):
        x = L.Convolution(x, num_output=cfg.ch(cfg.lowlevel_features), kernel_size=3, pad=1,
                          weight_filler=dict(type="msra"), bias_filler=dict(type="constant", value=0))
        setattr(n, f"low{i}", x)
        setattr(n, f"low{i}_relu", L.ReLU(x, in_place=True))
    return x


def propagation(n, features, trimap, cfg, out, crop_to_trimap=False):
    """AffinityExp then SparseLaplacianSolve, C++ or Python flavour (same maths, same params);
    the matte is the blob named `out`. ``crop_to_trimap``: the affinities are cropped to the
    trimap's H x W first (a deploy net whose CNN input is padded), so that the solve runs on the
    image's own grid and the padding never enters the propagation."""
    import json
    _, L, _ = _caffe()
    # No weight decay on theta and b: decay pulls theta to 0, i.e. towards uniform affinities
    # (plain diffusion of the trimap), and in our runs it was as large as the loss gradient.
    no_decay = [dict(lr_mult=cfg.affinity_lr_mult, decay_mult=0)] * 2
    fillers = dict(weight_filler=dict(type="gaussian", std=0.001), bias_filler=dict(type="constant", value=0))

    def affinity():
        if not crop_to_trimap:
            return n.affinity
        # Crop keeps rows 0..H-1 and columns 0..W-1; the edges from the last column / row to the
        # padding that it keeps are ignored by the solve (no such edge in an H x W grid).
        n.affinity_crop = L.Crop(n.affinity, trimap, crop_param=dict(axis=2, offset=[0]))
        return n.affinity_crop
    if cfg.flavour == "cpp":
        n.affinity = L.AffinityExp(features, param=no_decay, affinity_exp_param=dict(
            exponent_bound=cfg.exponent_bound, **fillers))
        alpha = L.SparseLaplacianSolve(affinity(), trimap, sparse_laplacian_solve_param=dict(
            c=cfg.c, shrink=cfg.shrink, tolerance=cfg.tolerance))
    elif cfg.flavour == "python":
        n.affinity = L.Python(features, param=no_decay, python_param=dict(
            module="dmpn.layers.affinity_exp", layer="AffinityExpLayer",
            param_str=json.dumps({"exponent_bound": cfg.exponent_bound, **fillers})))
        alpha = L.Python(affinity(), trimap, python_param=dict(
            module="dmpn.layers.sparse_laplacian_solve", layer="SparseLaplacianSolveLayer",
            param_str=json.dumps({"c": cfg.c, "shrink": cfg.shrink})))
    else:
        raise ValueError(f"flavour must be 'cpp' or 'python', got {cfg.flavour!r}")
    setattr(n, out, alpha)
    return alpha


def body(n, data, trimap, cfg, out, crop_to_trimap=False):
    _, L, _ = _caffe()
    sem = semantic_branch(n, data, cfg)
    low = lowlevel_branch(n, data, cfg)
    n.features = L.Concat(sem, low, axis=1)
    return propagation(n, n.features, trimap, cfg, out, crop_to_trimap)


def train_val(cfg, train_lmdb="data/train_lmdb", test_lmdb="data/test_lmdb", test_batch=1):
    """The training net: LMDB items -> slices -> DeepMattePropNet -> the paper's loss."""
    caffe, L, P = _caffe()
    n = caffe.NetSpec()
    transform = dict(scale=1.0 / 255, crop_size=cfg.crop, mirror=True)
    n.item = L.Data(source=train_lmdb, backend=P.Data.LMDB, batch_size=cfg.batch,
                    transform_param=transform, include=dict(phase=caffe.TRAIN))
    train_data = n.to_proto()
    n = caffe.NetSpec()
    n.item = L.Data(source=test_lmdb, backend=P.Data.LMDB, batch_size=test_batch,
                    transform_param=dict(scale=1.0 / 255, crop_size=cfg.crop, mirror=False),
                    include=dict(phase=caffe.TEST))
    # one top per part of an item, named as dmpn.datum lays them out: image, trimap, alpha, fg, bg
    parts = L.Slice(n.item, axis=1, slice_point=list(ITEM_SLICE_POINTS), ntop=len(CHANNEL_ORDER))
    for name, top in zip(CHANNEL_ORDER, parts):
        setattr(n, name, top)
    n.data = L.Concat(n.image, n.trimap, axis=1)
    alpha_pred = body(n, n.data, n.trimap, cfg, "alpha_pred")
    n.loss = L.MattingLoss(alpha_pred, n.alpha, n.trimap, n.fg, n.bg, n.image, loss_weight=1)
    proto = n.to_proto()
    proto.layer.insert(0, train_data.layer[0])
    proto.name = f"DeepMattePropNet{'' if cfg.width == 1 else f'_w{cfg.width:g}'}"
    return proto


def padded(size, multiple=32):
    """``size`` rounded up to a multiple of ``multiple`` (SegNet's five 2 x 2 poolings)."""
    return -(-int(size) // multiple) * multiple


# The inputs of a deploy net, as the predictor (dmpn/evaluate.py) feeds them.
DEPLOY_INPUTS = ("data", "trimap")
DEPLOY_OUTPUT = "alpha"


def deploy(cfg, height=320, width=320):
    """Inference net for an image of ``height`` x ``width`` (any size; the predictor reshapes it
    to each image's). Inputs: `data` 1 x 4 x H' x W', the image RGB in [0, 1] and its trimap in
    [0, 1] (unknown 128/255, as in training), edge-replicated up to H', W', the multiples of 32
    the CNN needs; `trimap` 1 x 1 x H x W, the trimap itself. The affinities are cropped to H x W
    before the solve, so the matte is the propagation on the image's own grid, whatever the
    padding. Output `alpha` 1 x 1 x H x W."""
    caffe, L, _ = _caffe()
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 4, padded(height), padded(width)]))
    n.trimap = L.Input(shape=dict(dim=[1, 1, int(height), int(width)]))
    body(n, n.data, n.trimap, cfg, DEPLOY_OUTPUT, crop_to_trimap=True)
    proto = n.to_proto()
    proto.name = f"DeepMattePropNet{'' if cfg.width == 1 else f'_w{cfg.width:g}'}_deploy"
    return proto


def solver(net_path, max_iter, snapshot_prefix, snapshot=5000, display=20, gpu=True,
           test_iter=0, test_interval=0, clip_gradients=None, base_lr=0.1):
    """The paper's solver: SGD, fixed learning rate 0.1, momentum 0.9; weight decay 0.0005 is
    ours (the paper gives none; AffinityExp's parameters are exempt, see propagation())."""
    from caffe.proto import caffe_pb2
    s = caffe_pb2.SolverParameter()
    s.net = net_path
    s.type = "SGD"
    s.base_lr = base_lr
    s.lr_policy = "fixed"
    s.momentum = 0.9
    s.weight_decay = 0.0005
    s.max_iter = int(max_iter)
    s.display = display
    s.average_loss = display
    s.snapshot = snapshot
    s.snapshot_prefix = snapshot_prefix
    s.solver_mode = caffe_pb2.SolverParameter.GPU if gpu else caffe_pb2.SolverParameter.CPU
    if test_iter:
        s.test_iter.append(test_iter)
        s.test_interval = test_interval
    else:
        s.test_interval = max_iter + 1  # no test passes during training
        s.test_initialization = False
    if clip_gradients:
        s.clip_gradients = clip_gradients
    return s


def epochs_to_iterations(epochs, train_items, batch):
    """ceil(epochs x train_items / batch), exactly for the decimal ``epochs`` a user writes: in
    float, 2.2 x 100 / 4 came to 55.000000000000007 and so 56."""
    return int(math.ceil(Fraction(repr(float(epochs))) * int(train_items) / int(batch)))


# ---- the committed prototxt/ files ----------------------------------------------------------

# The paper's data (Sec. 4.1): 50 training originals x 1000 backgrounds x 3 rotations.
PAPER_TRAIN_ITEMS = 50 * 1000 * 3
PAPER_EPOCHS = 20
SLIM_WIDTH = 0.125  # 8 to 64 channels: the SegNet-VGG16 shape at 1/8 width, for CPU runs


def header(text):
    return "".join(f"# {line}\n" if line else "#\n" for line in text.splitlines())


# Caffe's SolverParameter.max_iter is an int32, and so is the test_interval of max_iter + 1 that
# solver() gives a net without test passes.
MAX_ITER_LIMIT = 2 ** 31 - 2


def paper_solver_text(train_items, epochs, note, net_path="prototxt/train_val.prototxt",
                      snapshot_prefix="data/deepmattepropnet", gpu=True, batch=None):
    """(the text of the paper's solver for ``epochs`` over ``train_items`` composites, its
    max_iter); prototxt/solver.prototxt with the defaults."""
    batch = batch or NetConfig().batch
    if epochs * train_items / batch > MAX_ITER_LIMIT:  # before ceil(): it overflows on inf
        raise ValueError(f"{epochs:g} epochs x {train_items:,} composites / batch {batch} = "
                         f"{epochs * train_items / batch:.3g} iterations: more than Caffe's max_iter "
                         f"holds ({MAX_ITER_LIMIT:,})")
    iters = epochs_to_iterations(epochs, train_items, batch)
    source = ("(50 originals x 1000 backgrounds x 3 rotations)" if train_items == PAPER_TRAIN_ITEMS
              else "(the dataset's manifest)")
    return header(
        f"The paper's solver (Sec. 4): SGD, fixed learning rate 0.1, momentum 0.9, {epochs:g} epochs\n"
        "(the paper: about 20); weight decay 0.0005 is ours (the paper gives none), on every learned\n"
        "blob but AffinityExp's (convolutions, low-level biases, the Scale layers after BatchNorm).\n"
        f"max_iter = {epochs:g} epochs x {train_items:,} training composites {source}\n"
        f"/ batch {batch} = {iters}. For other data: tools/make_prototxt.py --solver-for DATA/manifest.json.\n"
        + ("solver_mode GPU; for a machine without one: tools/make_prototxt.py --solver-for ... --cpu,\n"
           "or prototxt/slim_solver.prototxt.\n" if gpu
           else "solver_mode CPU.\n") + note) + str(
        solver(net_path, iters, snapshot_prefix, snapshot=10000, gpu=gpu)), iters


def generated_files():
    """{file name: text} for prototxt/: generated by tools/make_prototxt.py, never edited."""
    note = "Generated by tools/make_prototxt.py from dmpn/net.py; do not edit by hand."
    paper = NetConfig()
    slim = NetConfig(width=SLIM_WIDTH, crop=160, batch=4)
    files = {}
    for prefix, cfg in (("", paper), ("slim_", slim)):
        for flavour, suffix in (("cpp", ""), ("python", "_python")):
            c = NetConfig(**{**cfg.__dict__, "flavour": flavour})
            what = (f"DeepMattePropNet, {'paper size' if cfg.width == 1 else f'width x{cfg.width:g} (CPU runs)'}, "
                    f"{'C++/CUDA' if flavour == 'cpp' else 'Python'} AffinityExp and SparseLaplacianSolve.")
            files[f"{prefix}train_val{suffix}.prototxt"] = header(f"{what}\n{note}") + str(
                train_val(c, train_lmdb="data/train_lmdb", test_lmdb="data/test_lmdb"))
        files[f"{prefix}deploy.prototxt"] = header(
            "Inference net; inputs `data` 1 x 4 x H' x W' (RGB and trimap in [0, 1], edge-replicated to\n"
            "multiples of 32) and `trimap` 1 x 1 x H x W; the solve runs on H x W. tools/predict.py feeds them.\n"
            f"{note}") + str(
            deploy(cfg, height=cfg.crop, width=cfg.crop))
    files["solver.prototxt"], _ = paper_solver_text(
        PAPER_TRAIN_ITEMS, PAPER_EPOCHS, "Run from the repository root after tools/make_lmdb.py --out data.\n" + note)
    files["slim_solver.prototxt"] = header(
        "The same solver for the slim net on the CPU (the main job rewrites max_iter for its data).\n" + note) + str(
        solver("prototxt/slim_train_val.prototxt", epochs_to_iterations(PAPER_EPOCHS, 64, slim.batch),
               "data/deepmattepropnet_slim", snapshot=100, gpu=False))
    return files


def write_files(folder):
    import os
    from dmpn.imageio import write_text
    files = generated_files()
    for name, text in files.items():
        write_text(os.path.join(folder, name), text)
    return sorted(files)
