"""The paper's network: the committed prototxts are what dmpn/net.py generates, the nets build
and keep their sizes, the C++ and Python layer flavours train alike, training resumes from a
snapshot with the stock tool, and the VGG16 initialiser."""
import json
import os
import re
import subprocess

import numpy as np
import pytest

from conftest import ROOT, identity_batchnorm, require_caffe, tool
from dmpn import lmdb_builder as lb
from dmpn import net as N


def test_committed_prototxts_match_the_generator():
    files = N.generated_files()
    assert set(files) == {p for p in os.listdir(ROOT / "prototxt") if p.endswith(".prototxt")}
    for name, text in files.items():
        assert (ROOT / "prototxt" / name).read_text() == text, (
            f"prototxt/{name} drifted from dmpn/net.py: run tools/make_prototxt.py")


def test_solver_has_the_papers_settings():
    from caffe.proto import caffe_pb2  # noqa: F401  (pycaffe's generated protobuf module)
    from google.protobuf import text_format
    s = caffe_pb2.SolverParameter()
    text_format.Merge((ROOT / "prototxt/solver.prototxt").read_text(), s)
    assert (s.type, s.lr_policy) == ("SGD", "fixed")
    assert s.base_lr == pytest.approx(0.1) and s.momentum == pytest.approx(0.9)
    assert s.max_iter == N.epochs_to_iterations(20, 50 * 1000 * 3, N.NetConfig().batch)
    assert s.solver_mode == caffe_pb2.SolverParameter.GPU


# What README.md states (the expected values are its, written out here, not read from dmpn/):
# - "The main job", step 2, and "The network (`prototxt/`)" (solver.prototxt row): weight decay
#   0.0005 on the convolutions, their biases and the Scale layers after each BatchNorm, none on
#   AffinityExp;
# - "The main job", step 2 ("[AffinityExp's] parameters learn at lr_mult 10") and the paragraph
#   after the "+ AffinityExp lr_mult 10" table: "the main job (only) trains the affinity module
#   at 10x", so the committed (paper's) prototxts keep lr_mult 1.
README_WEIGHT_DECAY = 0.0005
README_MAIN_JOB_AFFINITY_LR_MULT = 10.0
README_PROTOTXT_AFFINITY_LR_MULT = 1.0


def parse(path, message):
    from caffe.proto import caffe_pb2  # noqa: F401  (pycaffe's generated protobuf module)
    from google.protobuf import text_format
    m = getattr(caffe_pb2, message)()
    text_format.Merge(open(path).read(), m)
    return m


def check_decay_and_affinity_params(path, lr_mult):
    """AffinityExp (C++ or Python flavour): two ParamSpecs (theta, b) at ``lr_mult``, decay_mult 0;
    every Convolution and Scale: decay on all its learned blobs (no ParamSpec gives decay_mult 0;
    Caffe's default is 1). Returns the number of Convolutions."""
    n = parse(path, "NetParameter")
    affinity = [l for l in n.layer if l.type == "AffinityExp"
                or (l.type == "Python" and l.python_param.layer == "AffinityExpLayer")]
    assert len(affinity) == 1, path
    params = affinity[0].param
    assert len(params) == 2, path  # theta and b
    for p in params:
        assert p.HasField("lr_mult") and p.lr_mult == pytest.approx(lr_mult), (path, p)
        assert p.HasField("decay_mult") and p.decay_mult == 0, (path, p)
    convs = [l for l in n.layer if l.type == "Convolution"]
    scales = [l for l in n.layer if l.type == "Scale"]
    assert convs and scales, path
    for l in convs + scales:
        assert all(p.decay_mult != 0 for p in l.param), (path, l.name)  # weights and biases decay
        assert all(p.lr_mult != 0 for p in l.param), (path, l.name)      # and are learned
    return len(convs)


def test_committed_prototxts_weight_decay_and_affinity_params():
    """README: solver weight decay 0.0005; AffinityExp's theta and b exempt (decay_mult 0) and at
    lr_mult 1 in the committed nets (10 is the main job's only); every convolution decays."""
    for name in ("solver.prototxt", "slim_solver.prototxt"):
        s = parse(ROOT / "prototxt" / name, "SolverParameter")
        assert s.weight_decay == pytest.approx(README_WEIGHT_DECAY, rel=1e-6)  # a float32 field, name
        assert s.regularization_type == "L2", name
    for name in ("train_val.prototxt", "train_val_python.prototxt", "deploy.prototxt",
                 "slim_train_val.prototxt", "slim_train_val_python.prototxt", "slim_deploy.prototxt"):
        assert check_decay_and_affinity_params(ROOT / "prototxt" / name,
                                               README_PROTOTXT_AFFINITY_LR_MULT) == 13 + 13 + 3, name


def test_main_job_nets_weight_decay_and_affinity_params(tmp_path):
    """The nets and solver the main job writes (dmpn.main_job.write_nets): weight decay 0.0005,
    AffinityExp at lr_mult 10 without decay, every convolution decayed (README, "The main job")."""
    require_caffe()
    from dmpn.main_job import write_nets
    manifest = {"size": {"height": 192, "width": 192}, "counts": {"train": 224}}
    netdir, _, _, _ = write_nets(str(tmp_path), str(tmp_path / "data"), manifest, 20)
    s = parse(os.path.join(netdir, "solver.prototxt"), "SolverParameter")
    assert s.weight_decay == pytest.approx(README_WEIGHT_DECAY, rel=1e-6)  # a float32 field
    assert s.regularization_type == "L2"
    assert s.net == os.path.join(netdir, "train_val.prototxt")
    for name in ("train_val.prototxt", "deploy.prototxt"):
        assert check_decay_and_affinity_params(os.path.join(netdir, name),
                                               README_MAIN_JOB_AFFINITY_LR_MULT) == 13 + 13 + 3, name


def test_epochs_to_iterations_is_exact():
    """The decimal epochs a user writes, not their binary float: 2.2 x 100 / 4 is 55 (float gave
    56), and the paper's 20 x 150,000 / 4 is 750,000."""
    assert N.epochs_to_iterations(2.2, 100, 4) == 55
    assert N.epochs_to_iterations(20, 150000, 4) == 750000
    assert N.epochs_to_iterations(0.1, 7, 4) == 1 and N.epochs_to_iterations(2.25, 101, 4) == 57
    bad = [(e / 10, n) for e in range(1, 100) for n in range(1, 200)
           if N.epochs_to_iterations(e / 10, n, 4) != -(-e * n // 40)]
    assert bad == []


def test_solver_at_the_largest_max_iter():
    """max_iter up to MAX_ITER_LIMIT gives a solver (its test_interval, max_iter + 1, is an int32
    too: 2^31 - 1 had failed in protobuf); one more is refused by name."""
    text, iters = N.paper_solver_text(1, 4 * N.MAX_ITER_LIMIT, "x", batch=4)
    assert iters == N.MAX_ITER_LIMIT == 2 ** 31 - 2 and f"max_iter: {iters}" in text
    with pytest.raises(ValueError, match="more than Caffe's max_iter holds"):
        N.paper_solver_text(1, 4 * N.MAX_ITER_LIMIT + 4, "x", batch=4)


def test_solver_scaled_to_a_dataset(tmp_path, tiny_lmdb):
    from caffe.proto import caffe_pb2  # noqa: F401
    from google.protobuf import text_format
    data = tmp_path / "mydata"   # not the repository's data/: the solver must train on this one
    rc = lb.main(["--out", str(data), "--synthetic", "3", "--size", "320x320", "--bg-per-original", "1",
                  "--rotations", "1", "--test-originals", "1", "--seed", "2"])
    assert rc == 0
    manifest = data / "manifest.json"
    n_train = json.loads(manifest.read_text())["counts"]["train"]

    def make(*extra, manifest=manifest):
        return subprocess.run([tool("python"), str(ROOT / "tools" / "make_prototxt.py"), "--solver-for",
                               str(manifest), *extra], capture_output=True, text=True)

    res = make("--epochs", "20")
    assert res.returncode == 0, res.stderr
    s = caffe_pb2.SolverParameter()
    text_format.Merge((data / "solver.prototxt").read_text(), s)
    assert s.max_iter == -(-20 * n_train // 4) and str(s.max_iter) in res.stdout  # the paper's 20 epochs
    assert (s.base_lr, s.net) == (pytest.approx(0.1), str(data / "train_val.prototxt"))
    assert s.snapshot_prefix == str(data / "deepmattepropnet") and s.solver_mode == s.GPU
    n = caffe_pb2.NetParameter()
    text_format.Merge((data / "train_val.prototxt").read_text(), n)
    sources = {l.include[0].phase: l.data_param.source for l in n.layer if l.type == "Data"}
    assert sources == {caffe_pb2.TRAIN: str(data / "train_lmdb"), caffe_pb2.TEST: str(data / "test_lmdb")}
    assert [l for l in n.layer if l.name == "conv1_1"][0].convolution_param.num_output == 64
    res = make("--cpu", "--slim", "--epochs", "0.5", "--solver-out", str(tmp_path / "run" / "s.prototxt"))
    assert res.returncode == 0, res.stderr
    text_format.Merge((tmp_path / "run" / "s.prototxt").read_text(), s)
    assert s.solver_mode == s.CPU and s.net == str(tmp_path / "run" / "train_val.prototxt")
    assert s.snapshot_prefix == str(data / "deepmattepropnet_slim")
    n = caffe_pb2.NetParameter()
    text_format.Merge((tmp_path / "run" / "train_val.prototxt").read_text(), n)
    assert [l for l in n.layer if l.name == "conv1_1"][0].convolution_param.num_output == 8
    # What it writes trains with the stock tool, on this dataset.
    res = subprocess.run([tool("caffe"), "train", "-solver", str(tmp_path / "run" / "s.prototxt")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (data / f"deepmattepropnet_slim_iter_{s.max_iter}.caffemodel").exists()
    # Refused before anything is written, naming the file or value:
    small = make("--slim", manifest=tiny_lmdb / "manifest.json")   # 48 x 48 items, 160 crops
    assert small.returncode == 2 and "smaller than" in small.stderr and "Check failed" not in small.stderr, small.stderr
    assert "--slim trains on 160" in make(manifest=tiny_lmdb / "manifest.json").stderr
    for solver_out, message in ((ROOT / "prototxt" / "solver.prototxt", "would replace the repository's"),
                                (tmp_path / "run", "is a folder")):
        before = (ROOT / "prototxt" / "train_val.prototxt").read_bytes()
        res = make("--solver-out", str(solver_out))
        assert res.returncode == 2 and message in res.stderr, res.stderr
        assert (ROOT / "prototxt" / "train_val.prototxt").read_bytes() == before
    assert not (tmp_path / "train_val.prototxt").exists()
    res = make("--epochs", "1e300")
    assert res.returncode == 2 and "more than Caffe's max_iter holds" in res.stderr, res.stderr
    for text, message in (('{"size": [1, 2]}', "no training count"), ("{oops", "not a JSON manifest"),
                          ('{"counts": {"train": 1e400}}', "no training count")):
        manifest.write_text(text)
        res = make()
        assert res.returncode == 2 and f"{manifest}: {message}" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
    (data / "manifest.json").write_text('{"counts": {"train": 3}}')
    os.rename(data / "train_lmdb", data / "moved")
    res = make()
    assert res.returncode == 2 and f"{data / 'train_lmdb'}: no such LMDB" in res.stderr, res.stderr


def deploy_net(caffe, tmp_path, cfg, h, w):
    path = tmp_path / "deploy.prototxt"
    path.write_text(str(N.deploy(cfg, height=h, width=w)))
    return identity_batchnorm(caffe.Net(str(path), caffe.TEST))


def test_paper_net_structure(tmp_path):
    caffe = require_caffe()
    net = deploy_net(caffe, tmp_path, N.NetConfig(), 64, 64)
    types = [l.type for l in net.layers]
    assert types.count("Convolution") == 13 + 13 + 3  # encoder, decoder, low-level branch
    assert types.count("BatchNorm") == 26 and types.count("Scale") == 26
    assert types.count("Pooling") == 5 and types.count("Unpooling") == 5
    assert types.count("AffinityExp") == 1 and types.count("SparseLaplacianSolve") == 1
    assert net.params["conv1_1"][0].data.shape == (64, 4, 3, 3)  # RGB + trimap
    assert net.params["conv5_3"][0].data.shape == (512, 512, 3, 3)
    assert net.blobs["features"].data.shape[1] == 128  # Ts + Tl
    assert net.params["affinity"][0].data.shape == (2, 128)
    assert net.blobs["alpha"].data.shape == (1, 1, 64, 64)


@pytest.mark.parametrize("h,w", [(50, 70), (33, 96)])
def test_slim_net_keeps_odd_sizes(tmp_path, h, w):
    """Unpooling takes its output size from the pooled blob, so sizes that halve unevenly
    come back whole."""
    caffe = require_caffe()
    net = deploy_net(caffe, tmp_path, N.NetConfig(width=N.SLIM_WIDTH), h, w)
    net.blobs["data"].reshape(1, 4, h, w)  # unpadded: the CNN itself at the odd size
    net.reshape()
    rng = np.random.default_rng(0)
    net.blobs["data"].data[0, :3] = rng.random((3, h, w))
    tri = np.full((h, w), 0.5)
    tri[:, :5] = 0
    tri[:, -5:] = 1
    net.blobs["data"].data[0, 3] = net.blobs["trimap"].data[0, 0] = tri
    net.forward()
    alpha = net.blobs["alpha"].data[0, 0]
    assert alpha.shape == (h, w)
    assert np.all(np.isfinite(alpha)) and alpha.min() >= -1e-4 and alpha.max() <= 1 + 1e-4
    assert alpha[:, :5].mean() < 0.5 < alpha[:, -5:].mean()


@pytest.fixture(scope="module")
def tiny_lmdb(tmp_path_factory):
    out = tmp_path_factory.mktemp("lmdb") / "data"
    rc = lb.main(["--out", str(out), "--synthetic", "4", "--size", "48x48", "--bg-per-original", "2",
                  "--rotations", "1", "--test-originals", "1", "--seed", "3"])
    assert rc == 0
    return out


def write_training(tmp_path, flavour, data, max_iter=3, snapshot=0, cfg=None):
    cfg = cfg or N.NetConfig(width=N.SLIM_WIDTH, crop=32, batch=2, flavour=flavour)
    train = tmp_path / f"train_{flavour}.prototxt"
    train.write_text(str(N.train_val(cfg, train_lmdb=str(data / "train_lmdb"), test_lmdb=str(data / "test_lmdb"))))
    solver = N.solver(str(train), max_iter, str(tmp_path / f"snap_{flavour}"), snapshot=snapshot or max_iter + 1,
                      display=1, gpu=False, clip_gradients=10.0)
    solver.random_seed = 7
    path = tmp_path / f"solver_{flavour}.prototxt"
    path.write_text(str(solver))
    return path


def test_cpp_and_python_flavours_train_alike(tmp_path, tiny_lmdb):
    """A few SGD iterations of the C++ and the Python flavour, from the same weights on the same
    data, give the same losses."""
    caffe = require_caffe()
    losses = {}
    weights = None
    for flavour in ("cpp", "python"):
        caffe.set_random_seed(7)
        solver = caffe.get_solver(str(write_training(tmp_path, flavour, tiny_lmdb)))
        if weights is None:
            weights = {k: [b.data.copy() for b in v] for k, v in solver.net.params.items()}
        else:
            assert set(weights) == set(solver.net.params)
            for k, blobs in solver.net.params.items():
                for b, w in zip(blobs, weights[k]):
                    b.data[...] = w
        run = []
        for _ in range(3):
            solver.step(1)
            run.append(float(solver.net.blobs["loss"].data))
        losses[flavour] = run
        # SGD moved the weights, the affinity module's and the first convolution's alike (a
        # changing loss alone would also come from the changing batches)
        for name in ("affinity", "conv1_1"):
            assert not np.array_equal(solver.net.params[name][0].data, weights[name][0]), (flavour, name)
    assert all(np.isfinite(losses["cpp"]))
    np.testing.assert_allclose(losses["cpp"], losses["python"], rtol=2e-3)


def test_training_resumes_from_a_snapshot(tmp_path, tiny_lmdb):
    solver = write_training(tmp_path, "cpp", tiny_lmdb, max_iter=4, snapshot=2)
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")
    first = subprocess.run([tool("caffe"), "train", "-solver", str(solver)], capture_output=True,
                           text=True, env=env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    state = tmp_path / "snap_cpp_iter_2.solverstate"
    assert state.exists() and (tmp_path / "snap_cpp_iter_4.caffemodel").exists()
    (tmp_path / "snap_cpp_iter_4.caffemodel").unlink()
    (tmp_path / "snap_cpp_iter_4.solverstate").unlink()
    resumed = subprocess.run([tool("caffe"), "train", "-solver", str(solver), "-snapshot", str(state)],
                             capture_output=True, text=True, env=env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stderr
    iters = [int(i) for i in re.findall(r"Iteration (\d+), loss", resumed.stderr)]
    assert iters and min(iters) >= 2 and max(iters) <= 4
    assert (tmp_path / "snap_cpp_iter_4.caffemodel").exists()


def write_vgg16(path, width=1.0):
    """A VGG16-shaped caffemodel (``width`` scales its channels); returns its conv weights."""
    from caffe.proto import caffe_pb2
    from dmpn.vgg_init import ENCODER
    rng = np.random.default_rng(0)
    vgg = caffe_pb2.NetParameter(name="VGG_ILSVRC_16_layers")
    widths = {f"conv{b}_{r}": max(1, int(c * width))
              for b, (c, reps) in enumerate(N.VGG16_BLOCKS, 1) for r in range(1, reps + 1)}
    cin = 3
    expected = {}
    for name in ENCODER:
        c = widths[name]
        layer = vgg.layer.add(name=name, type="Convolution")
        w = rng.normal(0, 0.01, (c, cin, 3, 3)).astype(np.float32)
        expected[name] = w
        blob = layer.blobs.add()
        blob.shape.dim.extend(w.shape)
        blob.data.extend(w.ravel())
        bias = layer.blobs.add()
        bias.shape.dim.append(c)
        bias.data.extend(np.zeros(c))
        cin = c
    path.write_bytes(vgg.SerializeToString())
    return expected


def test_vgg16_initialisation(tmp_path):
    """tools/init_from_vgg16.py on a VGG16-shaped caffemodel the test writes itself."""
    caffe = require_caffe()
    vgg_path = tmp_path / "vgg16.caffemodel"
    expected = write_vgg16(vgg_path)
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(str(N.deploy(N.NetConfig(), 32, 32)))
    out = tmp_path / "init.caffemodel"
    res = subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "tools/init_from_vgg16.py"), "--net", str(deploy),
                          "--vgg16", str(vgg_path), "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    net = caffe.Net(str(deploy), str(out), caffe.TEST)
    w11 = net.params["conv1_1"][0].data
    np.testing.assert_allclose(w11[:, :3], expected["conv1_1"][:, ::-1] * 255, rtol=1e-6)
    assert np.all(w11[:, 3] == 0)
    np.testing.assert_allclose(net.params["conv5_3"][0].data, expected["conv5_3"], rtol=1e-6)
    # A slim net cannot take VGG16's weights: a clear refusal.
    slim = tmp_path / "slim.prototxt"
    slim.write_text(str(N.deploy(N.NetConfig(width=N.SLIM_WIDTH), 32, 32)))
    res = subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "tools/init_from_vgg16.py"), "--net", str(slim),
                          "--vgg16", str(vgg_path), "--out", str(tmp_path / "x.caffemodel")], capture_output=True, text=True)
    assert res.returncode == 2 and "conv1_1" in res.stderr and "width 1" in res.stderr
    # A net Caffe cannot build, and an --out that cannot be written, are refused before the work.
    for net_arg, out_arg, message in ((ROOT / "prototxt" / "slim_solver.prototxt", tmp_path / "y.caffemodel",
                                       "a solver prototxt, not a net prototxt"),
                                      (deploy, tmp_path / "vgg16.caffemodel" / "y.caffemodel", "is a file")):
        res = subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "tools/init_from_vgg16.py"), "--net",
                              str(net_arg), "--vgg16", str(vgg_path), "--out", str(out_arg)],
                             capture_output=True, text=True)
        assert res.returncode == 2 and message in res.stderr and "Check failed" not in res.stderr, res.stderr


def test_init_tools_find_their_default_net_from_any_folder(tmp_path):
    """--net defaults to this repository's prototxt/deploy.prototxt, not a path relative to the
    working folder; a net Caffe cannot open is a one-line error naming it."""
    require_caffe()
    vgg_path = tmp_path / "vgg16.caffemodel"
    write_vgg16(vgg_path, width=1 / 32)  # too narrow for the paper-size net: refused after loading it
    tool_ = [str(ROOT / ".venv/bin/python"), str(ROOT / "tools/init_from_vgg16.py"), "--vgg16", str(vgg_path),
             "--out", str(tmp_path / "x.caffemodel")]
    res = subprocess.run(tool_, capture_output=True, text=True, cwd=tmp_path)
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 2 and last.startswith("init_from_vgg16: error: conv1_1: VGG16 has"), res.stderr[-2000:]
    assert str(ROOT / "prototxt" / "deploy.prototxt") in last
    missing = tmp_path / "missing.prototxt"
    res = subprocess.run(tool_ + ["--net", str(missing)], capture_output=True, text=True, cwd=tmp_path)
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 2 and last.startswith("init_from_vgg16: error:") and str(missing) in last, res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "x.caffemodel").exists()
    from dmpn.cli import DEPLOY_PROTOTXT  # tools/init_edge_aware.py's default too
    assert os.path.isabs(DEPLOY_PROTOTXT) and os.path.isfile(DEPLOY_PROTOTXT)


def test_predict_tool_files_and_folders(tmp_path):
    """tools/predict.py: any size (padded to 32 and cropped back), a file or a folder, and a
    clear refusal of a trimap that does not fit its image."""
    caffe = require_caffe()
    from dmpn.imageio import read_alpha, write_png
    deploy = ROOT / "prototxt/slim_deploy.prototxt"
    net = identity_batchnorm(caffe.Net(str(deploy), caffe.TEST))
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    rng = np.random.default_rng(0)
    images, trimaps = tmp_path / "image", tmp_path / "trimap"
    for name, (h, w) in {"a": (50, 70), "b": (33, 40)}.items():
        write_png(images / f"{name}.png", rng.random((h, w, 3)))
        t = np.full((h, w), 128, np.uint8)
        t[:, :6] = 0
        t[:, -6:] = 255
        write_png(trimaps / f"{name}.png", t)
    py = str(ROOT / ".venv/bin/python")
    tool_py = str(ROOT / "tools/predict.py")
    res = subprocess.run([py, tool_py, "--model", str(deploy), "--weights", str(weights), "--image", str(images),
                          "--trimap", str(trimaps), "--out", str(tmp_path / "out"), "--no-progress"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    a = read_alpha(tmp_path / "out/a.png")
    assert a.shape == (50, 70) and read_alpha(tmp_path / "out/b.png").shape == (33, 40)
    assert a[:, :6].mean() < 0.5 < a[:, -6:].mean()
    single = tmp_path / "single.png"
    res = subprocess.run([py, tool_py, "--model", str(deploy), "--weights", str(weights), "--image",
                          str(images / "a.png"), "--trimap", str(trimaps / "a.png"), "--out", str(single)],
                         capture_output=True, text=True)
    assert res.returncode == 0 and read_alpha(single).shape == (50, 70), res.stderr[-2000:]
    assert "Initializing net from parameters" not in res.stderr  # Caffe's net dump: noise
    # ... quieted for Caffe's import only: the variable does not stay in the environment of the
    # process, whose later `caffe train` children must log their iterations
    import os
    from dmpn.evaluate import caffe_predictor
    before = os.environ.get("GLOG_minloglevel")
    caffe_predictor(deploy, weights)
    assert os.environ.get("GLOG_minloglevel") == before
    # --force-known: exactly 0 / 1 on the trimap's known pixels, the net's values elsewhere
    forced = tmp_path / "forced.png"
    res = subprocess.run([py, tool_py, "--model", str(deploy), "--weights", str(weights), "--image",
                          str(images / "a.png"), "--trimap", str(trimaps / "a.png"), "--out", str(forced),
                          "--force-known"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    f = read_alpha(forced)
    assert (f[:, :6] == 0).all() and (f[:, -6:] == 1).all()
    np.testing.assert_array_equal(f[:, 6:-6], read_alpha(single)[:, 6:-6])
    res = subprocess.run([py, tool_py, "--model", str(deploy), "--weights", str(weights), "--image",
                          str(images / "a.png"), "--trimap", str(trimaps / "b.png"), "--out", str(single)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "b.png" in res.stderr and "a.png" in res.stderr


def test_train_val_feeds_each_blob_its_part_of_the_item(tmp_path, tiny_lmdb):
    """The training net's wiring, by blob name: the Slice of the LMDB item (image, trimap, alpha,
    foreground, background), the 4-channel input, and the loss on the right blobs (a swapped
    Slice top or loss bottom runs just as well, and trains on the wrong thing)."""
    caffe = require_caffe()
    from dmpn import matting_loss as ML
    cfg = N.NetConfig(width=N.SLIM_WIDTH, crop=32, batch=2)
    path = tmp_path / "train.prototxt"
    path.write_text(str(N.train_val(cfg, train_lmdb=str(tiny_lmdb / "train_lmdb"),
                                    test_lmdb=str(tiny_lmdb / "test_lmdb"))))
    net = identity_batchnorm(caffe.Net(str(path), caffe.TRAIN))
    net.forward()
    b = {k: net.blobs[k].data.astype(np.float64)
         for k in ("data", "image", "trimap", "alpha", "fg", "bg", "alpha_pred")}
    assert [b[k].shape[1] for k in ("data", "image", "trimap", "alpha", "fg", "bg")] == [4, 3, 1, 1, 3, 3]
    np.testing.assert_array_equal(b["data"][:, :3], b["image"])
    np.testing.assert_array_equal(b["data"][:, 3:], b["trimap"])
    assert set(np.unique(np.round(b["trimap"] * 255))) <= {0, 128, 255}
    assert np.isclose(b["trimap"], 128 / 255).any()  # the crops hold unknown pixels
    # the composite is alpha * fg + (1 - alpha) * bg, up to the 8-bit rounding of the stored layers
    composite = b["alpha"] * b["fg"] + (1 - b["alpha"]) * b["bg"]
    assert np.abs(composite - b["image"]).max() <= 1.5 / 255
    assert float(net.blobs["loss"].data) == pytest.approx(
        ML.matting_loss_forward(b["alpha_pred"], b["alpha"], b["trimap"], b["fg"], b["bg"], b["image"]),
        rel=1e-5)
