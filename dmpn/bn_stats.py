"""tools/recompute_bn.py: recompute the BatchNorm statistics of a trained net for its final
weights ("precise BN"), before it is used for inference.

Caffe's BatchNorm keeps, for the TEST phase, an exponential moving average of the batch means
and variances (moving_average_fraction 0.999: about the last 1,000 iterations). Under the
paper's fixed learning rate 0.1 the weights move a long way in 1,000 iterations, so a snapshot's
statistics describe weights it no longer has, and the held-out mattes of consecutive snapshots
swing widely (in a 248-original run, validation SAD 1.75 to 2.29 between snapshots 100
iterations apart: README, The main job). This tool runs the TRAIN-phase net (its own Data
layer: random crops and mirroring) for `--batches` batches with the weights fixed and sets each
BatchNorm's statistics to the exact average over them (Caffe's unbiased variance, as in
training). Nothing else changes; the output is a .caffemodel for `caffe test`,
tools/predict.py and tools/evaluate.py.
"""
from __future__ import annotations

import argparse
import os
import tempfile

from dmpn.caffe_checks import ITEM_CHANNELS, check_lmdb, check_prototxt, check_weights, in_phase
from dmpn.cli import (CAFFE_TOOL_ERRORS, INTERRUPTED, check_not_an_input, check_writable, import_caffe_quietly,
                      positive_int, run_tool, seed)
from dmpn.imageio import save_caffemodel

# Layers that read training data by themselves (BVLC's); a "Python" layer without bottoms is
# taken as a data layer too. Without one, the TRAIN net's inputs stay zero.
DATA_LAYER_TYPES = ("Data", "ImageData", "HDF5Data", "WindowData")


def batchnorm_layers(net) -> list:
    """(name, layer) of a pycaffe net's BatchNorm layers, in net order."""
    return [(name, layer) for name, layer in zip(net._layer_names, net.layers) if layer.type == "BatchNorm"]


def missing_statistics(net) -> list:
    """Names of the BatchNorm layers that hold no statistics (scale factor 0): weights that were
    never trained, such as an initialisation. Caffe's TEST phase then divides by sqrt(eps), the
    activations overflow, and SparseLaplacianSolve stops on non-finite affinities."""
    return [name for name, layer in batchnorm_layers(net) if float(layer.blobs[2].data.ravel()[0]) == 0]


def accumulate(net, batches, feed=None, progress=None):
    """Runs `batches` forward passes (up to the last BatchNorm) of a net whose BatchNorm layers
    have moving_average_fraction 1, after zeroing their statistics: each BatchNorm then holds
    the sums of the batch means and variances and their count, i.e. the exact average.
    `feed(net, i)` may set the inputs of pass i (a net with a Data layer reads its own)."""
    bns = batchnorm_layers(net)
    if not bns:
        raise ValueError("the net has no BatchNorm layer")
    for _, layer in bns:
        for blob in layer.blobs:
            blob.data[...] = 0
    names = [name for name, _ in bns]
    for i in range(batches):
        if feed is not None:
            feed(net, i)
        net.forward(end=names[-1])
        if progress is not None:
            progress.update(1)
    return names


def _item_channels(layers, top):
    """The channel count the net needs of the items a Data layer puts in ``top``: that of
    tools/make_lmdb.py's items when a Slice cuts them at ITEM_SLICE_POINTS, else None (unknown)."""
    from dmpn.net import ITEM_SLICE_POINTS
    for layer in layers:
        if (layer.type == "Slice" and top in layer.bottom and layer.slice_param.axis == 1
                and tuple(layer.slice_param.slice_point) == tuple(ITEM_SLICE_POINTS)):
            return ITEM_CHANNELS
    return None


def check_data_layers(net_param, path) -> None:
    """ValueError naming the prototxt ``path`` when its TRAIN net has no layer that reads data
    (e.g. a deploy net with an Input layer: its inputs would stay zero and the statistics be
    those of an empty image), or when a Data layer's LMDB / LevelDB source does not exist
    or is empty, not an LMDB, or holds items with other channels than the net slices or smaller
    than its crop (Caffe would abort the process on each)."""
    from caffe.proto import caffe_pb2
    stages = set(net_param.state.stage)
    # the TRAIN net recompute_bn builds: level 0, the prototxt's own stages (Caffe's FilterNet)
    layers = [layer for layer in net_param.layer if in_phase(layer, "TRAIN", stages)]
    readers = [layer for layer in layers if layer.type in DATA_LAYER_TYPES
               or (layer.type == "Python" and not layer.bottom)]
    if not readers:
        raise ValueError(f"{path}: the net has no data layer (Data, or a Python data layer) in its "
                         "TRAIN phase, so its inputs would be zero: give the training net "
                         "(train_val.prototxt), whose Data layer reads the training LMDB")
    for layer in readers:
        if layer.type == "Data":
            source = layer.data_param.source
            if not source or not os.path.exists(source):
                backend = caffe_pb2.DataParameter.DB.Name(layer.data_param.backend)
                where = "" if os.path.isabs(source) else f", relative to the current folder {os.getcwd()}"
                raise ValueError(f"{source or '(none)'}: no such {backend} database (the source of "
                                 f"Data layer '{layer.name}' in {path}{where})")
            if layer.data_param.backend == caffe_pb2.DataParameter.LMDB:
                channels = _item_channels(layers, layer.top[0]) if layer.top else None
                check_lmdb(source, crop=layer.transform_param.crop_size, channels=channels)


def with_exact_averages(net_param):
    """A copy of a NetParameter whose BatchNorm layers accumulate plain sums (fraction 1)."""
    from caffe.proto import caffe_pb2
    p = caffe_pb2.NetParameter()
    p.CopyFrom(net_param)
    for layer in p.layer:
        if layer.type == "BatchNorm":
            layer.batch_norm_param.moving_average_fraction = 1.0
    return p


def recompute_bn(train_val, weights, out, batches=100, seed=0, show_progress=True):
    """Writes ``out``: ``weights`` with the BatchNorm statistics of the TRAIN net ``train_val``
    averaged over ``batches`` batches. Every file is checked before Caffe sees it
    (dmpn.caffe_checks: an InputError naming it where Caffe would abort)."""
    caffe = import_caffe_quietly()  # without its net set-up log (GLOG_minloglevel=0 keeps it)
    from tqdm import tqdm
    for path in (train_val, weights):
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such file")
    if batches < 1:
        raise ValueError(f"--batches must be at least 1, got {batches}")
    param = check_prototxt(train_val, phase="TRAIN")
    if not any(layer.type == "BatchNorm" for layer in param.layer):
        raise ValueError(f"{train_val}: the net has no BatchNorm layer, nothing to recompute")
    check_data_layers(param, train_val)
    caffe.set_random_seed(int(seed))  # the Data layer's crops and mirroring
    with tempfile.TemporaryDirectory() as tmp:
        proto = os.path.join(tmp, "exact_bn.prototxt")
        with open(proto, "w") as f:
            f.write(str(with_exact_averages(param)))
        net = caffe.Net(proto, caffe.TRAIN)
    check_weights(weights, net, net_path=train_val)
    net.copy_from(os.fspath(weights))
    with tqdm(total=batches, desc="BatchNorm statistics", unit="batch", disable=not show_progress) as bar:
        names = accumulate(net, batches, progress=bar)
    save_caffemodel(net, out)  # never a half-written model
    return names


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", required=True, help="the training net (train_val.prototxt, with its Data layer)")
    ap.add_argument("--weights", required=True, help="the trained .caffemodel (a snapshot)")
    ap.add_argument("--out", required=True, help="the .caffemodel to write")
    ap.add_argument("--batches", type=positive_int, default=100,
                    help="training batches to average over (default 100)")
    ap.add_argument("--seed", type=seed, default=0,
                    help="seed of the Data layer's crops and mirroring (0 <= seed < 2**32)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)

    def work():
        # (the training snapshot would be silently replaced by the recomputed one)
        check_not_an_input(a.out, [(f"--weights {a.weights}", a.weights), (f"--net {a.net}", a.net)],
                           "writing it would replace that file")
        check_writable(a.out, folder=False)  # before minutes of work
        try:
            names = recompute_bn(a.net, a.weights, a.out, a.batches, a.seed, not a.no_progress)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"interrupted: nothing written to {a.out}; run the same "
                                    "command again to recompute the statistics") from None
        print(f"wrote {a.out}: statistics of {len(names)} BatchNorm layers averaged over "
              f"{a.batches} batches")
    return run_tool("recompute_bn", work, CAFFE_TOOL_ERRORS + ((KeyboardInterrupt, INTERRUPTED),))
