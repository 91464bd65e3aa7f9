"""tools/recompute_bn.py (dmpn/bn_stats.py): a trained net's BatchNorm statistics become the
exact average of the batch statistics over the given batches, and the TEST phase uses them."""
import os
import subprocess

import numpy as np
import pytest

from conftest import ROOT, assert_caffe_set_up_log_quiet_unless_asked, refused, require_caffe
from dmpn import bn_stats

NET = """name: "bn"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 5 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "bn" }
layer { name: "scale" type: "Scale" bottom: "bn" top: "scaled" scale_param { bias_term: true } }
"""


def load(caffe, tmp_path, text, phase, weights=None):
    path = tmp_path / f"net_{phase}.prototxt"
    path.write_text(text)
    return caffe.Net(str(path), phase, weights=weights) if weights else caffe.Net(str(path), phase)


def test_statistics_are_the_exact_average_over_the_batches(tmp_path):
    caffe = require_caffe()
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    param = caffe_pb2.NetParameter()
    text_format.Merge(NET, param)
    exact = str(bn_stats.with_exact_averages(param))
    assert "moving_average_fraction: 1" in exact
    net = load(caffe, tmp_path, exact, caffe.TRAIN)
    rng = np.random.default_rng(0)
    batches = [rng.normal(i, 1 + i, (4, 3, 5, 6)) for i in range(5)]  # statistics that drift
    seen = []

    def feed(n, i):
        n.blobs["data"].data[...] = batches[i]

    def record():
        conv = net.blobs["conv"].data.astype(np.float64)
        seen.append(conv)

    original_forward = net.forward
    net.forward = lambda **kw: (original_forward(**kw), record())[0]
    assert bn_stats.accumulate(net, len(batches), feed=feed) == ["bn"]
    blobs = net.params["bn"]
    count = blobs[2].data[0]
    assert count == pytest.approx(len(batches))
    m = 4 * 5 * 6
    mean = np.mean([c.mean(axis=(0, 2, 3)) for c in seen], axis=0)
    var = np.mean([c.var(axis=(0, 2, 3)) * m / (m - 1) for c in seen], axis=0)
    np.testing.assert_allclose(blobs[0].data / count, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(blobs[1].data / count, var, rtol=1e-5)
    # Saved and loaded for inference, the BatchNorm normalises with exactly those statistics.
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    test = load(caffe, tmp_path, NET, caffe.TEST, str(weights))
    x = rng.normal(0, 1, (4, 3, 5, 6))
    test.blobs["data"].data[...] = x
    test.forward()
    conv = test.blobs["conv"].data.astype(np.float64)
    expected = (conv - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(test.blobs["bn"].data, expected, rtol=1e-4, atol=1e-5)


def run_tool(*args):
    return subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "tools/recompute_bn.py"), "--no-progress", *args],
                          capture_output=True, text=True)


def test_tool_refuses_bad_input(tmp_path):
    caffe = require_caffe()
    no_bn = tmp_path / "no_bn.prototxt"
    no_bn.write_text(NET.split('layer { name: "bn"')[0])
    weights = tmp_path / "w.caffemodel"
    load(caffe, tmp_path, NET, caffe.TEST).save(str(weights))
    out = tmp_path / "out.caffemodel"
    res = run_tool("--net", str(no_bn), "--weights", str(weights), "--out", str(out))
    assert res.returncode == 2 and str(no_bn) in res.stderr and "no BatchNorm layer" in res.stderr
    res = run_tool("--net", str(no_bn), "--weights", str(tmp_path / "missing.caffemodel"), "--out", str(out))
    assert res.returncode == 2 and "missing.caffemodel: no such file" in res.stderr
    res = run_tool("--net", str(weights), "--weights", str(weights), "--out", str(out))
    assert res.returncode == 2 and "not a net prototxt" in res.stderr
    assert not out.exists() and not (tmp_path / "out.caffemodel.tmp").exists()


def test_untrained_weights_are_refused_with_the_reason(tmp_path):
    """An untrained net (an initialisation) has no BatchNorm statistics: predicting with it
    would stop deep in SparseLaplacianSolve on non-finite affinities; instead the predictor
    names the file, the layer and what to do."""
    caffe = require_caffe()
    from dmpn.evaluate import caffe_predictor
    from dmpn.imageio import InputError
    deploy = ROOT / "prototxt" / "slim_deploy.prototxt"
    weights = tmp_path / "init.caffemodel"
    caffe.Net(str(deploy), caffe.TEST).save(str(weights))
    with pytest.raises(InputError, match=r"init\.caffemodel: BatchNorm layer 'conv1_1_bn' and \d+ more hold no statistics.*recompute_bn"):
        caffe_predictor(deploy, weights)
    image, trimap = tmp_path / "i.png", tmp_path / "t.png"
    from dmpn.imageio import write_png
    write_png(image, np.zeros((32, 32, 3)))
    write_png(trimap, np.full((32, 32), 0.5))
    res = subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "tools/predict.py"), "--model", str(deploy),
                          "--weights", str(weights), "--image", str(image), "--trimap", str(trimap),
                          "--out", str(tmp_path / "a.png")], capture_output=True, text=True)
    assert res.returncode == 2 and "no statistics" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "a.png").exists()


def test_net_without_data_layer_is_refused(tmp_path):
    """A deploy net (an Input layer) would give the statistics of all-zero inputs."""
    caffe = require_caffe()
    deploy = ROOT / "prototxt" / "slim_deploy.prototxt"
    weights = tmp_path / "w.caffemodel"
    caffe.Net(str(deploy), caffe.TEST).save(str(weights))
    out = tmp_path / "out.caffemodel"
    res = run_tool("--net", str(deploy), "--weights", str(weights), "--out", str(out), "--batches", "1")
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"recompute_bn: error: {deploy}: the net has no data layer" in res.stderr
    assert not out.exists()


def test_missing_data_source_is_named_before_caffe_aborts(tmp_path):
    caffe = require_caffe()
    missing = tmp_path / "no_such_lmdb"
    data = ('layer { name: "data" type: "Data" top: "data" include { phase: TRAIN }\n'
            f'        data_param {{ source: "{missing}" batch_size: 4 backend: LMDB }} }}\n')
    train = tmp_path / "train.prototxt"
    train.write_text(data + NET.split("\n", 2)[2])  # NET without its name and Input layer
    weights = tmp_path / "w.caffemodel"
    load(caffe, tmp_path, NET, caffe.TEST).save(str(weights))
    out = tmp_path / "out.caffemodel"
    res = run_tool("--net", str(train), "--weights", str(weights), "--out", str(out))
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"{missing}: no such LMDB database (the source of Data layer 'data' in {train})" in res.stderr
    assert not out.exists()


def test_data_layers_of_the_train_phase():
    require_caffe()
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    def param(text):
        return text_format.Merge(text, caffe_pb2.NetParameter())
    test_only = param('layer { name: "d" type: "Data" top: "x" include { phase: TEST } '
                      'data_param { source: "/nowhere" batch_size: 1 } }')
    with pytest.raises(ValueError, match="net.prototxt: the net has no data layer"):
        bn_stats.check_data_layers(test_only, "net.prototxt")
    # Levels and stages as Caffe's FilterNet reads them for the TRAIN state (level 0, no stage).
    for rule in ('include { stage: "deploy" }', 'include { min_level: 1 }',
                 'include { max_level: -1 }', 'exclude { not_stage: "x" }', 'exclude { max_level: 0 }'):
        only_elsewhere = param('layer { name: "d" type: "Data" top: "x" %s '
                               'data_param { source: "/nowhere" batch_size: 1 } }' % rule)
        with pytest.raises(ValueError, match="no data layer"):
            bn_stats.check_data_layers(only_elsewhere, "net.prototxt")
    for rule in ('include { max_level: 0 }', 'include { not_stage: "deploy" }',
                 'exclude { stage: "deploy" }', 'exclude { min_level: 1 }'):
        here = param('layer { name: "d" type: "Data" top: "x" %s '
                      'data_param { source: "/nowhere" batch_size: 1 } }' % rule)
        with pytest.raises(ValueError, match="/nowhere: no such"):
            bn_stats.check_data_layers(here, "net.prototxt")
    # Stages the prototxt itself declares are kept by Caffe's Net constructor.
    staged = 'layer { name: "d" type: "Data" top: "x" include { phase: TRAIN stage: "train" } ' \
             'data_param { source: "/nowhere" batch_size: 1 } }'
    with pytest.raises(ValueError, match="/nowhere: no such"):
        bn_stats.check_data_layers(param('state { stage: "train" } ' + staged), "net.prototxt")
    with pytest.raises(ValueError, match="no data layer"):
        bn_stats.check_data_layers(param(staged), "net.prototxt")
    unstaged = param('state { stage: "deploy" } layer { name: "d" type: "Data" top: "x" '
                     'include { not_stage: "deploy" } data_param { source: "/nowhere" batch_size: 1 } }')
    with pytest.raises(ValueError, match="no data layer"):
        bn_stats.check_data_layers(unstaged, "net.prototxt")
    python_data = param('layer { name: "d" type: "Python" top: "x" '
                        'python_param { module: "m" layer: "L" } }')
    bn_stats.check_data_layers(python_data, "net.prototxt")  # a Python layer without bottoms reads data
    python_op = param('layer { name: "i" type: "Input" top: "x" input_param { shape { dim: 1 } } } '
                      'layer { name: "p" type: "Python" bottom: "x" top: "y" python_param { module: "m" layer: "L" } }')
    with pytest.raises(ValueError, match="no data layer"):
        bn_stats.check_data_layers(python_op, "net.prototxt")


@pytest.fixture
def training(tmp_path):
    """A slim train_val net over a small LMDB of 11-channel 48 x 48 items (crop 32), and weights
    for it (untrained: recompute_bn fills the statistics)."""
    caffe = require_caffe()
    from dmpn import net as N
    from test_caffe_checks import write_lmdb
    cfg = N.NetConfig(width=N.SLIM_WIDTH, crop=32, batch=2)
    lmdb = write_lmdb(tmp_path / "train_lmdb", items=4)
    train = tmp_path / "train_val.prototxt"
    train.write_text(str(N.train_val(cfg, train_lmdb=str(lmdb), test_lmdb=str(lmdb))))
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(str(N.deploy(cfg, 32, 32)))
    weights = tmp_path / "w.caffemodel"
    caffe.Net(str(deploy), caffe.TEST).save(str(weights))
    return train, weights, lmdb


def test_tool_recomputes_with_checked_files(tmp_path, training):
    train, weights, _ = training
    out = tmp_path / "bn.caffemodel"
    res = run_tool("--net", str(train), "--weights", str(weights), "--out", str(out), "--batches", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "statistics of" in res.stdout and out.stat().st_size > 0
    caffe = require_caffe()
    from dmpn.caffe_checks import check_weights
    check_weights(out, caffe.Net(str(train), caffe.TRAIN))
    assert not missing_after(caffe, train, out)


def missing_after(caffe, train, weights):
    return bn_stats.missing_statistics(caffe.Net(str(train), caffe.TRAIN, weights=str(weights)))


def test_files_caffe_would_abort_on_are_refused_by_name(tmp_path, training):
    """Was exit 134 and a glog dump: garbage prototxt or weights, a .solverstate as --weights,
    weights of another width, an empty LMDB, an empty folder, items with other than 11 channels,
    items smaller than the net's crop."""
    caffe = require_caffe()
    from dmpn import net as N
    from test_caffe_checks import solver_state, write_lmdb
    train, weights, lmdb = training
    out = tmp_path / "out" / "bn.caffemodel"
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    state = solver_state(tmp_path / "snap_iter_100.solverstate")
    wide = tmp_path / "wide.prototxt"
    wide.write_text(str(N.deploy(N.NetConfig(width=0.25), 32, 32)))
    wide_weights = tmp_path / "wide.caffemodel"
    caffe.Net(str(wide), caffe.TEST).save(str(wide_weights))

    def with_lmdb(name, path):
        net = tmp_path / f"{name}.prototxt"
        net.write_text(train.read_text().replace(str(lmdb), str(path)))
        return net
    (tmp_path / "empty_folder").mkdir()
    cases = [
        (train, garbage, f"{garbage}: not a Caffe .caffemodel"),
        (garbage, weights, f"{garbage}: not a net prototxt: a binary file"),
        (train, state, f"{state}: a Caffe solver state (.solverstate, iteration 100), not weights"),
        (train, wide_weights, f"{wide_weights}: layer 'conv1_1' parameter 0 has shape 16 x 4 x 3 x 3, "
                              f"the net {train} wants 8 x 4 x 3 x 3"),
        (with_lmdb("empty", write_lmdb(tmp_path / "empty_lmdb", items=0)), weights,
         f"{tmp_path / 'empty_lmdb'}: the LMDB is empty"),
        (with_lmdb("folder", tmp_path / "empty_folder"), weights,
         f"{tmp_path / 'empty_folder'}: not an LMDB: the folder holds no data.mdb"),
        (with_lmdb("nine", write_lmdb(tmp_path / "nine_lmdb", channels=9)), weights,
         f"{tmp_path / 'nine_lmdb'}: items have 9 channels (item '00000000'); the net reads 11"),
        (with_lmdb("small", write_lmdb(tmp_path / "small_lmdb", height=24, width=40)), weights,
         f"{tmp_path / 'small_lmdb'}: items are 24 x 40 (item '00000000'), smaller than the net's 32 x 32 crop"),
    ]
    for net, w, message in cases:
        refused(run_tool("--net", str(net), "--weights", str(w), "--out", str(out), "--batches", "1"), message)
        assert not out.parent.exists()


def test_output_and_seed_are_checked_before_the_work(tmp_path, training):
    train, weights, _ = training
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    res = run_tool("--net", str(train), "--weights", str(weights), "--out", str(afile / "bn.caffemodel"),
                   "--batches", "1")
    refused(res, f"{afile}/bn.caffemodel: cannot be created: {afile} is a file")
    assert "File exists" not in res.stderr and "Creating layer" not in res.stderr
    for seed in ("-1", str(2 ** 32)):
        res = run_tool("--net", str(train), "--weights", str(weights), "--out", str(tmp_path / "o.caffemodel"),
                       "--seed", seed)
        refused(res, "argument --seed: expected a whole number from 0 to 4294967295, got '" + seed)
    assert not (tmp_path / "o.caffemodel").exists()


INTERRUPTED = """
import sys
from dmpn import bn_stats
def stop(*a, **k):
    raise KeyboardInterrupt
bn_stats.accumulate = stop
sys.exit(bn_stats.main(sys.argv[1:]))
"""


def test_ctrl_c_says_what_was_kept_in_one_line(tmp_path, training):
    train, weights, _ = training
    out = tmp_path / "bn.caffemodel"
    res = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", INTERRUPTED, "--no-progress", "--net", str(train),
                          "--weights", str(weights), "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 130, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    line = [x for x in res.stderr.splitlines() if x.startswith("recompute_bn:")]
    assert line == [f"recompute_bn: error: interrupted: nothing written to {out}; run the same "
                    "command again to recompute the statistics"], res.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["train_lmdb", "train_val.prototxt",
                                                                  "deploy.prototxt", "w.caffemodel"])


def test_the_output_is_not_an_input(tmp_path, training):
    """--out equal to --weights (by any spelling) would silently replace the training snapshot
    the statistics are recomputed for: refused, and the snapshot left as it was."""
    train, weights, _ = training
    before = weights.read_bytes()
    for out, option in ((weights, "--weights"), (weights.parent / "." / weights.name, "--weights"), (train, "--net")):
        res = run_tool("--net", str(train), "--weights", str(weights), "--out", str(out), "--batches", "1")
        refused(res, f"recompute_bn: error: {out}: the output is the input {option}")
        assert "Creating layer" not in res.stderr
    assert weights.read_bytes() == before


def test_caffe_net_set_up_log_is_quiet_unless_asked_for(tmp_path, training):
    """Without Caffe's net set-up log unless asked for (conftest)."""
    train, weights, _ = training
    cmd = [str(ROOT / ".venv/bin/python"), str(ROOT / "tools/recompute_bn.py"), "--no-progress", "--net", str(train),
           "--weights", str(weights), "--out", str(tmp_path / "bn.caffemodel"), "--batches", "1"]
    assert_caffe_set_up_log_quiet_unless_asked(cmd)
