"""tools/init_from_vgg16.py: initialise DeepMattePropNet's SegNet encoder from a VGG16
caffemodel (e.g. the ILSVRC VGG_ILSVRC_16_layers.caffemodel a user has; none can be downloaded
here), as SegNet does. conv1_1 takes 4 channels (RGB + trimap): VGG's 3 input channels are
copied and the trimap channel starts at 0. VGG's convolution biases are dropped: in our net a
BatchNorm follows every encoder convolution, which would remove them anyway. The rest of the
net keeps its fillers, seeded (--seed, default 0: the same inputs give the same file). VGG16
expects BGR input on a 0-255 scale with the mean subtracted; our net sees RGB in [0, 1], so the
RGB channels are reordered from VGG's BGR and scaled by 255 (the BatchNorm after conv1_1 absorbs
the missing mean).
"""
from __future__ import annotations

import argparse

import numpy as np

from dmpn.cli import DEPLOY_PROTOTXT, check_writable, run_tool, seed
from dmpn.net import VGG16_BLOCKS

ENCODER = [f"conv{b}_{r}" for b, (_, reps) in enumerate(VGG16_BLOCKS, start=1) for r in range(1, reps + 1)]


def read_caffemodel(path):
    from caffe.proto import caffe_pb2
    m = caffe_pb2.NetParameter()
    with open(path, "rb") as f:
        data = f.read()
    try:
        m.ParseFromString(data)
    except Exception as e:
        raise ValueError(f"{path}: not a caffemodel ({e})")
    blobs = {}
    for layer in list(m.layer) + list(m.layers):  # new and V1 layer formats
        if layer.blobs:
            blobs[layer.name] = [np.array(b.data, dtype=np.float32).reshape(
                tuple(b.shape.dim) if b.shape.dim else (b.num, b.channels, b.height, b.width))
                for b in layer.blobs]
    return blobs


def init_from_vgg16(net_prototxt, vgg_caffemodel, out_caffemodel, seed=0):
    """Writes ``out_caffemodel``: the encoder from VGG16, every other layer its filler's values
    drawn after ``caffe.set_random_seed(seed)`` (None: unseeded, another file each run)."""
    import caffe
    from dmpn.imageio import save_caffemodel
    vgg = read_caffemodel(vgg_caffemodel)
    missing = [n for n in ENCODER if n not in vgg]
    if missing:
        raise ValueError(f"{vgg_caffemodel}: no layer(s) {', '.join(missing)}: not a VGG16 caffemodel")
    if seed is not None:
        caffe.set_random_seed(int(seed))  # the fillers run as the net is built
    net = caffe.Net(net_prototxt, caffe.TEST)  # checked by main() (check_prototxt)
    for name in ENCODER:
        w = vgg[name][0]
        ours = net.params[name][0].data
        if name == "conv1_1":
            if w.shape[1] != 3:
                raise ValueError(f"{vgg_caffemodel}: conv1_1 has {w.shape[1]} input channels, expected 3")
            w4 = np.zeros((w.shape[0], 4) + w.shape[2:], np.float32)
            w4[:, :3] = w[:, ::-1] * 255.0  # BGR 0-255 -> our RGB in [0, 1]
            w = w4
        if w.shape != ours.shape:
            raise ValueError(f"{name}: VGG16 has {w.shape}, the net {net_prototxt} has {ours.shape} "
                             "(use the paper-size net, width 1)")
        ours[...] = w
    save_caffemodel(net, out_caffemodel)  # never a half-written model
    return ENCODER


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", default=DEPLOY_PROTOTXT,
                    help="our net (paper size; default: prototxt/deploy.prototxt of this repository)")
    ap.add_argument("--vgg16", required=True, help="VGG16 .caffemodel")
    ap.add_argument("--out", required=True, help="the .caffemodel to write (use with caffe train -weights)")
    ap.add_argument("--seed", type=seed, default=0, help="seed of the fillers of the layers VGG16 does "
                    "not supply (0 <= seed < 2**32)")
    a = ap.parse_args(argv)

    def work():
        from dmpn.caffe_checks import check_prototxt
        check_writable(a.out, folder=False)  # before the work, not after it
        check_prototxt(a.net)                # what Caffe would abort on
        layers = init_from_vgg16(a.net, a.vgg16, a.out, a.seed)
        print(f"wrote {a.out}: {len(layers)} encoder layers from {a.vgg16}")
    return run_tool("init_from_vgg16", work)
