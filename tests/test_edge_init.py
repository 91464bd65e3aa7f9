"""The edge-aware initialisation (dmpn/edge_init.py, tools/init_edge_aware.py): the initialised
low-level branch computes each pixel's L1 colour variation, and AffinityExp turns it into
exp(-k (A_i + B_j) + b), as the float64 reference says."""
import os
import subprocess

import numpy as np
import pytest

from conftest import ROOT, assert_caffe_set_up_log_quiet_unless_asked, identity_batchnorm, refused, require_caffe
from dmpn import edge_init as E
from dmpn import net as N
from dmpn.propagation import affinity_exp_forward


def test_edge_strengths_are_the_l1_colour_variation():
    rng = np.random.default_rng(0)
    im = rng.random((9, 11, 3))
    a, b = E.edge_strengths(im)
    fdx = np.abs(im[:, 1:] - im[:, :-1]).sum(-1)  # |I(y, x + 1) - I(y, x)|
    fdy = np.abs(im[1:] - im[:-1]).sum(-1)
    # Inside the outermost ring: towards the right and lower neighbours (A), from the left and
    # upper ones (B), exactly.
    np.testing.assert_allclose(a[1:-1, 1:-1], fdx[1:-1, 1:] + fdy[1:, 1:-1], atol=1e-12)
    np.testing.assert_allclose(b[1:-1, 1:-1], fdx[1:-1, :-1] + fdy[:-1, 1:-1], atol=1e-12)
    # A flat image has no edges; an edge's own difference is in both of its ends.
    a0, b0 = E.edge_strengths(np.full((6, 6, 3), 0.3))
    assert np.all(a0[1:-1, 1:-1] == 0) and np.all(b0[1:-1, 1:-1] == 0)
    step = np.zeros((6, 6, 3))
    step[:, 3:] = 0.5
    e = E.edge_exponent(step, k=2, bias=-1)
    assert e[0, 2, 2] == pytest.approx(-2 * (1.5 + 1.5) - 1)  # the edge across the step
    assert e[0, 2, 0] == pytest.approx(-1) and e[1, 2, 1] == pytest.approx(-1)  # flat parts
    with pytest.raises(ValueError, match="H x W x 3"):
        E.edge_strengths(np.zeros((4, 4)))


@pytest.mark.parametrize("width", [N.SLIM_WIDTH, 0.25])
def test_initialised_net_computes_the_reference(tmp_path, width):
    caffe = require_caffe()
    h, w = 64, 96
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(str(N.deploy(N.NetConfig(width=width), h, w)))
    out = tmp_path / "init.caffemodel"
    res = subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "tools/init_edge_aware.py"), "--net", str(deploy),
                          "--out", str(out), "--k", "3", "--bias", "-1.5"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    # Untrained BatchNorm made the identity, so that the semantic features stay finite; only
    # the edge channels of theta kept, to compare the affinities with the reference alone.
    net = identity_batchnorm(caffe.Net(str(deploy), str(out), caffe.TEST))
    theta = net.params["affinity"][0].data
    tl = net.params["low3"][0].data.shape[0]
    off = theta.shape[1] - tl
    assert theta[0, off + E.A_CHANNEL] == pytest.approx(-3) and theta[1, off + E.B_CHANNEL] == pytest.approx(-3)
    assert net.params["affinity"][1].data[0] == pytest.approx(-1.5)
    theta[...] = 0
    theta[0, off + E.A_CHANNEL] = theta[1, off + E.B_CHANNEL] = -3
    rng = np.random.default_rng(1)
    from skimage.filters import gaussian
    im = 0.4 * gaussian(rng.random((h, w, 3)), sigma=2, channel_axis=-1)
    im[:, w // 2:] += 0.5  # a colour edge down the middle
    net.blobs["data"].data[0, :3] = im.transpose(2, 0, 1)
    trimap = np.full((h, w), 0.5)
    trimap[:, :4], trimap[:, -4:] = 0, 1  # the solve after AffinityExp needs known pixels
    net.blobs["data"].data[0, 3] = net.blobs["trimap"].data[0, 0] = trimap
    net.forward()
    a, b = E.edge_strengths(im)
    np.testing.assert_allclose(net.blobs["low3"].data[0, E.A_CHANNEL], a, atol=1e-5)
    np.testing.assert_allclose(net.blobs["low3"].data[0, E.B_CHANNEL], b, atol=1e-5)
    aff = net.blobs["affinity"].data[0].astype(np.float64)
    ref = affinity_exp_forward(np.stack([a, b]), E.edge_theta(3), -1.5, N.NetConfig().exponent_bound)
    np.testing.assert_allclose(aff, ref, rtol=1e-4, atol=1e-12)
    # And it cuts the colour edge: the affinity across it is far below the flat parts'.
    assert np.median(aff[0, :, w // 2 - 1]) < 1e-3 * np.median(aff[0, 2:-2, 2:w // 2 - 3])


def test_tool_refuses_a_net_without_the_low_level_branch(tmp_path):
    require_caffe()
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 8 dim: 8 } } }\n'
                   'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }\n')
    out = tmp_path / "x.caffemodel"
    res = subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "tools/init_edge_aware.py"), "--net", str(bad),
                          "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 2 and "'low1'" in res.stderr and "not a DeepMattePropNet" in res.stderr
    assert not out.exists() and not (tmp_path / "x.caffemodel.tmp").exists()


@pytest.mark.parametrize("option", ["--k", "--bias"])
def test_edge_parameters_must_be_finite(option, capsys):
    for value in ("nan", "inf"):
        with pytest.raises(SystemExit) as exc:
            E.main(["--out", "x.caffemodel", option, value])
        assert exc.value.code == 2 and option in capsys.readouterr().err


def edge_tool(*args):
    return subprocess.run([str(ROOT / ".venv/bin/python"), str(ROOT / "tools/init_edge_aware.py"), *args],
                          capture_output=True, text=True)


def test_files_caffe_would_abort_on_are_refused_by_name(tmp_path):
    """Was exit 134 and a glog dump: a garbage or wrong prototxt, weights that are not a
    caffemodel (garbage, a .solverstate), weights of a net of another width."""
    caffe = require_caffe()
    from test_caffe_checks import solver_state
    full, slim_net = ROOT / "prototxt" / "deploy.prototxt", ROOT / "prototxt" / "slim_deploy.prototxt"
    slim = tmp_path / "slim.caffemodel"
    caffe.Net(str(slim_net), caffe.TEST).save(str(slim))
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    broken = tmp_path / "broken.prototxt"
    broken.write_text('name: "x"\nlayer { name: "c" type: \n')
    state = solver_state(tmp_path / "snap_iter_100.solverstate", str(tmp_path / "snap_iter_100.caffemodel"))
    out = tmp_path / "out" / "init.caffemodel"
    cases = [(["--net", str(garbage)], f"{garbage}: not a net prototxt: a binary file"),
             (["--net", str(broken)], f"{broken}: not a net prototxt (line 3: "),
             (["--net", str(ROOT / "prototxt" / "slim_solver.prototxt")], "a solver prototxt, not a net prototxt"),
             (["--net", str(full), "--weights", str(garbage)], f"{garbage}: not a Caffe .caffemodel"),
             (["--net", str(slim_net), "--weights", str(state)],
              f"{state}: a Caffe solver state (.solverstate, iteration 100), not weights: give the .caffemodel "
              f"of that snapshot ({tmp_path / 'snap_iter_100.caffemodel'})"),
             (["--net", str(full), "--weights", str(slim)],
              f"{slim}: layer 'conv1_1' parameter 0 has shape 8 x 4 x 3 x 3, the net {full} wants 64 x 4 x 3 x 3")]
    for args, message in cases:
        refused(edge_tool(*args, "--out", str(out)), message)
        assert not out.parent.exists()


def test_output_and_seed_are_checked_before_the_net_is_built(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    res = edge_tool("--net", str(ROOT / "prototxt" / "slim_deploy.prototxt"), "--out", str(afile / "x.caffemodel"))
    refused(res, f"{afile}/x.caffemodel: cannot be created: {afile} is a file")
    assert "File exists" not in res.stderr and "Creating layer" not in res.stderr
    for seed in ("-1", str(2 ** 32), "x"):
        res = edge_tool("--out", str(tmp_path / "x.caffemodel"), "--seed", seed)
        refused(res, f"argument --seed: expected a whole number from 0 to 4294967295, got '{seed}'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_vgg16_initialisation_is_reproducible_and_seeded(tmp_path):
    """tools/init_from_vgg16.py: the layers VGG16 does not supply take their fillers' values,
    which were unseeded (another file on each run); --seed, default 0, as init_edge_aware.py."""
    caffe = require_caffe()
    from test_net import write_vgg16
    from dmpn import vgg_init
    vgg = tmp_path / "vgg16.caffemodel"
    write_vgg16(vgg, width=N.SLIM_WIDTH)
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(str(N.deploy(N.NetConfig(width=N.SLIM_WIDTH), 32, 32)))
    outs = {}
    for k, (name, extra) in enumerate((("a", []), ("b", []), ("c", ["--seed", "1"]), ("d", ["--seed", "0"]))):
        caffe.set_random_seed(7919 * (k + 1))  # whatever came before in the process
        outs[name] = tmp_path / f"{name}.caffemodel"
        argv = ["--net", str(deploy), "--vgg16", str(vgg), "--out", str(outs[name])] + extra
        assert vgg_init.main(argv) == 0
    assert outs["a"].read_bytes() == outs["b"].read_bytes() == outs["d"].read_bytes()
    a, c = (caffe.Net(str(deploy), str(outs[k]), caffe.TEST) for k in ("a", "c"))
    assert np.array_equal(a.params["conv5_3"][0].data, c.params["conv5_3"][0].data)  # VGG16's
    assert not np.array_equal(a.params["conv5_3_D"][0].data, c.params["conv5_3_D"][0].data)  # a filler's


def test_caffe_net_set_up_log_is_quiet_unless_asked_for(tmp_path):
    """Without Caffe's net set-up log unless asked for (conftest)."""
    require_caffe()
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(str(N.deploy(N.NetConfig(width=0.25), 32, 32)))
    cmd = [str(ROOT / ".venv/bin/python"), str(ROOT / "tools/init_edge_aware.py"), "--net", str(deploy),
           "--out", str(tmp_path / "init.caffemodel")]
    assert_caffe_set_up_log_quiet_unless_asked(cmd)
