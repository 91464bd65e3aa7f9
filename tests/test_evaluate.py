"""dmpn.imageio, dmpn.evaluate (tools/evaluate.py), dmpn.baselines and dmpn.figures on small
generated PNG folders: table and JSON, the known-pixel protocol, real-data formats, every bad input."""
import json
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image
from skimage import io as skio

from conftest import require_caffe
from dmpn import evaluate as E
from dmpn import metrics as M
from dmpn.imageio import (InputError, list_images, read_alpha, read_image, read_trimap,
                          write_png)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL = os.path.join(os.path.dirname(ROOT), "shared", "data", "alphamatting_lowres")


# ----------------------------------------------------------------------------- data
def synth(seed, h=24, w=30):
    """(image HxWx3 uint8, gt alpha uint8, trimap uint8 0/128/255, noisy prediction uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2)
    alpha = np.clip((9.0 - r) / 4.0, 0, 1)
    gt = np.rint(alpha * 255).astype(np.uint8)
    tri = np.full((h, w), 128, np.uint8)
    tri[r > 11] = 0
    tri[r < 4] = 255
    fg, bg = np.array([0.9, 0.3, 0.1]), np.array([0.1, 0.5, 0.9])
    img = alpha[..., None] * fg + (1 - alpha[..., None]) * bg + rng.normal(0, 0.02, (h, w, 3))
    img = np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-40, 40, (h, w)), 0, 255).astype(np.uint8)
    return img, gt, tri, pred


def save(path, arr, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(arr)
    if mode:
        im = im.convert(mode)
    im.save(path)
    return path


@pytest.fixture
def dataset(tmp_path):
    """tmp/{images,gt,trimap,pred}/{a,b,c}.png plus the arrays."""
    data = {}
    for i, name in enumerate("abc"):
        img, gt, tri, pred = synth(i)
        save(tmp_path / "images" / f"{name}.png", img)
        save(tmp_path / "gt" / f"{name}.png", gt)
        save(tmp_path / "trimap" / f"{name}.png", tri)
        save(tmp_path / "pred" / f"{name}.png", pred)
        data[name] = (img, gt, tri, pred)
    return tmp_path, data


def cli(*args):
    """Run tools/evaluate.py in a subprocess: (returncode, stdout, stderr)."""
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "evaluate.py"), *map(str, args)],
                       capture_output=True, text=True, cwd=ROOT)
    return p.returncode, p.stdout, p.stderr


def expected(gt, tri, pred):
    p = pred / 255.0
    p[tri == 0] = 0
    p[tri == 255] = 1
    return M.all_errors(p, gt / 255.0, tri)


# ----------------------------------------------------------------------------- imageio
def test_read_formats(tmp_path):
    t = np.array([[0, 128, 255], [0, 100, 255]], np.uint8)
    want = np.array([[0, 128, 255], [0, 128, 255]], np.uint8)
    assert np.array_equal(read_trimap(save(tmp_path / "pal.png", t, "P")), want)
    assert np.array_equal(read_trimap(save(tmp_path / "rgb.png", np.stack([t] * 3, -1))), want)
    assert np.array_equal(read_trimap(save(tmp_path / "t16.png", t.astype(np.uint16) * 257)), want)
    assert np.array_equal(read_trimap(save(tmp_path / "bool.png", t > 0)), np.where(t > 0, 255, 0))
    a = read_alpha(save(tmp_path / "a16.png", t.astype(np.uint16) * 257))
    np.testing.assert_allclose(a, t / 255.0, atol=1e-12)
    np.testing.assert_allclose(read_alpha(save(tmp_path / "rgba.png", np.stack([t] * 4, -1))), t / 255.0)
    assert read_alpha(tmp_path / "rgb.png").dtype == np.float64
    im = read_image(save(tmp_path / "grey.png", t))
    assert im.shape == (2, 3, 3) and np.allclose(im[..., 2], t / 255.0)
    assert read_image(tmp_path / "rgba.png").shape == (2, 3, 3)


def test_read_refusals_name_the_file(tmp_path):
    t = np.array([[0, 1, 2]], np.uint8)
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    cases = {"label.png": lambda p: read_trimap(save(p, t)),
             "colour.png": lambda p: read_trimap(save(p, colour)),
             "colour_alpha.png": lambda p: read_alpha(save(p, colour)),
             "missing.png": lambda p: read_alpha(p)}
    for fname, call in cases.items():
        with pytest.raises(InputError, match=fname):
            call(str(tmp_path / fname))
    good = save(tmp_path / "ok.png", np.zeros((40, 40), np.uint8))
    data = open(good, "rb").read()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_text("not a png")
    for fname in ("trunc.png", "junk.png"):
        with pytest.raises(InputError, match=fname) as err:
            read_alpha(str(tmp_path / fname))
        assert "\n" not in str(err.value)


def test_write_png_and_list_images(tmp_path):
    write_png(tmp_path / "sub" / "x.png", np.array([[0.0, 0.5, 1.0, 0.2]]))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "sub" / "x.png")), [[0, 128, 255, 51]])
    assert os.listdir(tmp_path / "sub") == ["x.png"]  # no temp file left behind
    assert list_images(tmp_path / "sub") == {"x": str(tmp_path / "sub" / "x.png")}
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="empty"):
        list_images(tmp_path / "empty")
    with pytest.raises(InputError, match="nowhere"):
        list_images(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- CLI: table, JSON
def test_cli_table_and_json_schema(dataset):
    root, data = dataset
    rc, out, err = cli("--pred", root / "pred", "--gt", root / "gt", "--trimap", root / "trimap",
                       "--json", root / "r.json")
    assert rc == 0, err
    assert "set to 0 / 1 on the trimap's known pixels" in out
    for name in "abc":
        assert f"\n{name} " in out
    assert "mean (3 images)" in out and "MSEx1e3" in out
    js = json.loads((root / "r.json").read_text())
    assert set(js["per_image"]) == {"a", "b", "c"}
    assert set(js["mean"]) == {"sad", "mse", "grad", "conn"}
    for name, (img, gt, tri, pred) in data.items():
        row = js["per_image"][name]
        assert set(row) == {"sad", "mse", "grad", "conn"}
        want = expected(gt, tri, pred)
        for k in want:
            assert isinstance(row[k], float)
            assert row[k] == pytest.approx(want[k], rel=1e-12, abs=1e-15)
    for k in ("sad", "mse", "grad", "conn"):
        assert js["mean"][k] == pytest.approx(np.mean([js["per_image"][n][k] for n in "abc"]))
    # the table prints SAD as is and MSE x 1000
    assert f"{js['per_image']['a']['sad']:.3f}" in out
    assert f"{js['per_image']['a']['mse'] * 1000:.3f}" in out
    assert js["known_pixels_forced"] is True


def test_known_pixels_forced_and_option_off(dataset, tmp_path):
    root, data = dataset
    # garbage on known pixels does not change the standard scores ...
    for name, (img, gt, tri, pred) in data.items():
        dirty = pred.copy()
        dirty[tri != 128] = 77
        save(root / "dirty" / f"{name}.png", dirty)
    clean = E.score_folders(root / "pred", root / "gt", root / "trimap")
    forced = E.score_folders(root / "dirty", root / "gt", root / "trimap")
    assert forced.per_image == clean.per_image
    # ... but does with the protocol off, and the output says which protocol was used
    rc, out, err = cli("--pred", root / "dirty", "--gt", root / "gt", "--trimap", root / "trimap",
                       "--keep-known-pixels", "--json", root / "k.json")
    assert rc == 0, err
    assert "--keep-known-pixels" in out
    js = json.loads((root / "k.json").read_text())
    assert js["known_pixels_forced"] is False
    assert js["per_image"]["a"]["grad"] != pytest.approx(clean.per_image["a"]["grad"])


def test_real_world_formats_give_same_numbers(dataset):
    root, data = dataset
    for name, (img, gt, tri, pred) in data.items():
        save(root / "gt16" / f"{name}.png", gt.astype(np.uint16) * 257)          # 16-bit grey
        save(root / "pal" / f"{name}.png", tri, "P")                              # palette trimap
        save(root / "predrgb" / f"{name}.png", np.stack([pred] * 3, -1))         # RGB alpha
    a = E.score_folders(root / "pred", root / "gt", root / "trimap")
    b = E.score_folders(root / "predrgb", root / "gt16", root / "pal")
    for n in "abc":
        for k in M.METRICS:
            assert b.per_image[n][k] == pytest.approx(a.per_image[n][k], rel=1e-12, abs=1e-15)


def test_image_without_unknown_pixel_is_reported(dataset):
    root, data = dataset
    img, gt, tri, pred = data["b"]
    save(root / "trimap" / "b.png", np.where(gt > 127, 255, 0).astype(np.uint8))
    rc, out, err = cli("--pred", root / "pred", "--gt", root / "gt", "--trimap", root / "trimap",
                       "--json", root / "r.json")
    assert rc == 0, err
    assert "b: no unknown pixel" in out and "left out of every mean" in out
    assert "mean (2 of 3)" in out   # the images the means are over
    js = json.loads((root / "r.json").read_text())
    assert all(js["per_image"]["b"][k] is None for k in M.METRICS)
    for k in M.METRICS:  # every mean over the same images: those scored
        assert js["mean"][k] == pytest.approx(np.mean([js["per_image"][n][k] for n in "ac"]))
    assert "b" in js["notes"]


# ----------------------------------------------------------------------------- CLI: bad input
def _bad(root, *extra, pred="pred", gt="gt", trimap="trimap"):
    rc, out, err = cli("--pred", root / pred, "--gt", root / gt, "--trimap", root / trimap, *extra)
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: error:"), err
    return lines[0]


def test_bad_size_mismatch(dataset):
    root, data = dataset
    save(root / "pred" / "b.png", np.zeros((10, 10), np.uint8))
    msg = _bad(root)
    assert os.path.join("pred", "b.png") in msg and "does not match" in msg


def test_bad_trimap_size(dataset):
    root, data = dataset
    save(root / "trimap" / "c.png", np.zeros((10, 10), np.uint8))
    assert os.path.join("trimap", "c.png") in _bad(root)


def test_bad_missing_partners(dataset):
    root, data = dataset
    os.remove(root / "gt" / "a.png")
    msg = _bad(root)
    assert os.path.join("pred", "a.png") in msg and "ground truth" in msg
    root2 = root / "second"
    for sub in ("pred", "gt", "trimap"):
        os.makedirs(root2 / sub)
        for n in "abc":
            os.link(root / sub / f"{n}.png" if (root / sub / f"{n}.png").exists() else root / "pred" / f"{n}.png",
                    root2 / sub / f"{n}.png")
    os.remove(root2 / "pred" / "c.png")          # ground truth without prediction
    msg = _bad(root2)
    assert os.path.join("gt", "c.png") in msg and "prediction" in msg
    os.remove(root2 / "gt" / "c.png")
    os.remove(root2 / "trimap" / "b.png")         # prediction without trimap
    msg = _bad(root2)
    assert os.path.join("pred", "b.png") in msg and "trimap" in msg


def test_bad_trimap_values(dataset):
    root, data = dataset
    save(root / "trimap" / "a.png", np.array(data["a"][2] // 127, np.uint8))   # 0/1/2 labels
    msg = _bad(root)
    assert os.path.join("trimap", "a.png") in msg and "labels" in msg
    colour = np.zeros(data["a"][2].shape + (3,), np.uint8)
    colour[..., 0] = data["a"][2]
    save(root / "trimap" / "a.png", colour)
    assert os.path.join("trimap", "a.png") in _bad(root)


def test_bad_empty_and_missing_folders_and_broken_file(dataset):
    root, data = dataset
    os.makedirs(root / "none")
    assert "none" in _bad(root, pred="none")
    assert "nowhere" in _bad(root, gt="nowhere")
    (root / "pred" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert os.path.join("pred", "a.png") in _bad(root)


def test_bad_usage_exits_2():
    rc, out, err = cli("--gt", "x", "--trimap", "y")
    assert rc == 2 and "--pred" in err
    rc, out, err = cli("--gt", "x", "--trimap", "y", "--baselines", "cf,bogus", "--images", "z")
    assert rc == 2 and "bogus" in err
    rc, out, err = cli("--gt", "x", "--trimap", "y", "--model", "d.prototxt")
    assert rc == 2 and "--weights" in err


# ----------------------------------------------------------------------------- predictors
def test_score_predictor_python_callable(dataset):
    root, data = dataset
    seen = []

    def predictor(image, trimap01):
        seen.append((image.shape, image.dtype, float(image.max()), sorted(np.unique(trimap01))))
        return np.where(trimap01 == 0.5, 0.5, trimap01)

    res = E.score_predictor(predictor, root / "images", root / "trimap", root / "gt",
                            root / "out" / "half", name="half", progress=False)
    assert sorted(res.per_image) == ["a", "b", "c"]
    assert sorted(os.listdir(root / "out" / "half")) == ["a.png", "b.png", "c.png"]
    assert all(s[0] == (24, 30, 3) and s[1] == np.float64 and s[2] <= 1 for s in seen)
    assert seen[0][3] == [0.0, 0.5, 1.0]
    img, gt, tri, _ = data["a"]
    want = expected(gt, tri, np.where(tri == 128, 128, tri).astype(np.uint8))
    for k in want:
        assert res.per_image["a"][k] == pytest.approx(want[k], rel=1e-12)


def _fake_caffe_predictor(tmp_path, monkeypatch, gpu=0):
    """E.caffe_predictor on a stand-in pycaffe whose Net records the `data` blob that forward()
    sees and returns the `trimap` input as the matte: (predictor, calls)."""
    calls = {}

    class Blob:
        def __init__(self):
            self.data = np.zeros((1, 4, 1, 1), np.float32)

        def reshape(self, *shape):
            self.data = np.zeros(shape, np.float32)

    class Net:
        def __init__(self, deploy, phase):
            calls["init"] = (deploy, phase)
            self.blobs = {"data": Blob(), "trimap": Blob(), "alpha": Blob()}
            self.layers, self._layer_names = [], []

        def copy_from(self, weights):
            calls["weights"] = weights

        def reshape(self):
            self.blobs["alpha"].reshape(*self.blobs["trimap"].data.shape)

        def forward(self):
            d = self.blobs["data"].data
            calls["shape"], calls["data"] = d.shape, d.copy()
            self.blobs["alpha"].data[...] = self.blobs["trimap"].data     # alpha = the trimap input
            return {"alpha": self.blobs["alpha"].data}

    fake = types.SimpleNamespace(TEST=1, Net=Net, set_mode_cpu=lambda: calls.setdefault("cpu", True),
                                 set_mode_gpu=lambda: calls.setdefault("gpu", True),
                                 set_device=lambda i: calls.setdefault("device", i))
    monkeypatch.setitem(sys.modules, "caffe", fake)
    import dmpn.caffe_checks as C   # the checks need the real caffe_pb2; tested on their own
    monkeypatch.setattr(E, "check_deploy_prototxt", lambda path: None)
    monkeypatch.setattr(C, "check_bottoms", lambda param, path: None)
    monkeypatch.setattr(C, "check_weights", lambda weights, net, **kw: None)
    monkeypatch.setattr(C, "check_gpu", lambda device: int(device))
    (tmp_path / "d.prototxt").write_text("")
    (tmp_path / "w.caffemodel").write_bytes(b"")
    return E.caffe_predictor(tmp_path / "d.prototxt", tmp_path / "w.caffemodel", gpu=gpu), calls


def test_caffe_predictor_pads_and_crops(tmp_path, monkeypatch):
    pred, calls = _fake_caffe_predictor(tmp_path, monkeypatch)
    assert calls["device"] == 0 and calls["gpu"]
    rng = np.random.default_rng(0)
    tri01 = rng.choice([0.0, 0.5, 1.0], size=(37, 70))
    image = rng.random((37, 70, 3))
    out = pred(image, tri01)
    assert calls["shape"] == (1, 4, 64, 96)   # the CNN's input: padded to multiples of 32
    # the net gets the trimap as in training (the LMDB's 128 scaled by 1/255), not 0.5
    expected = np.where(tri01 == 0.5, np.float32(128 / 255), tri01)
    assert out.shape == (37, 70) and np.array_equal(out, expected)  # the solve's: unpadded
    assert np.array_equal(calls["data"][0, 3, :37, :70], expected)
    assert np.array_equal(calls["data"][0, 3, 37:, :70], np.repeat(expected[-1:], 64 - 37, 0))
    # channels 0-2: the image as given, R G B in [0, 1] (as the Data layer gives the LMDB's
    # RGB bytes x 1/255 in training: see the next test), not BGR / OpenCV's 0-255 convention
    data = calls["data"][0]
    for ch in range(3):
        np.testing.assert_array_equal(data[ch, :37, :70], image[..., ch].astype(np.float32))
        # edge-replicated: rows below from the last row, columns right from the last column
        np.testing.assert_array_equal(data[ch, 37:, :70], np.repeat(image[-1:, :, ch], 64 - 37, 0)
                                      .astype(np.float32))
        np.testing.assert_array_equal(data[ch, :37, 70:], np.repeat(image[:, -1:, ch], 96 - 70, 1)
                                      .astype(np.float32))
    assert data[:3].max() <= 1.0
    with pytest.raises(InputError, match="missing.caffemodel"):
        E.caffe_predictor(tmp_path / "d.prototxt", tmp_path / "missing.caffemodel")


def test_caffe_predictor_feeds_the_net_what_training_fed_it(tmp_path, monkeypatch):
    """The predictor's `data` blob for a composite equals the one training builds from the same
    composite's LMDB item. Training: tools/make_lmdb.py stores each composite as a raw uint8
    Datum, channels 0-2 the image R, G, B and 3 the trimap 0/128/255 (dmpn/datum.py,
    dmpn/compose.py pack_item); the train prototxt's Data layer applies transform_param
    scale 1/255 with no mean (Caffe's DataTransformer: value = byte x scale, no channel swap:
    only OpenCV-decoded *encoded* Datums are BGR, and ours are raw), a Slice cuts the item and a
    Concat of `image` and `trimap` is the net's `data`: RGB in [0, 1] and trimap / 255. Here
    both sides come from the code paths themselves: the builder's LMDB item and its test PNGs
    for the same composite, and the committed prototxt's layers, so they cannot drift apart."""
    require_caffe()
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    from dmpn import lmdb_builder as lb
    from dmpn.datum import decode_datum
    out = tmp_path / "data"
    assert lb.main(["--out", str(out), "--synthetic", "2", "--size", "40x52", "--bg-per-original", "1",
                    "--rotations", "1", "--test-originals", "1", "--seed", "3"]) == 0
    (key, blob), = lb.read_lmdb(str(out / "test_lmdb"))
    item, _ = decode_datum(blob)
    assert item.shape[1:] == (40, 52)

    # What the training net's `data` is, read from the committed prototxt (the main job's nets
    # come from the same dmpn.net.train_val; tests/test_net.py checks the files match it).
    for name in ("train_val.prototxt", "slim_train_val.prototxt"):
        n = caffe_pb2.NetParameter()
        text_format.Merge(open(os.path.join(ROOT, "prototxt", name)).read(), n)
        data_layers = [l for l in n.layer if l.type == "Data"]
        assert len(data_layers) == 2  # TRAIN and TEST
        for l in data_layers:
            tp = l.transform_param
            assert tp.scale == pytest.approx(1 / 255, rel=1e-7)
            assert not tp.mean_file and not list(tp.mean_value) and not l.data_param.mean_file
            assert l.top == ["item"]
        slices = [l for l in n.layer if l.type == "Slice"]
        assert len(slices) == 1 and slices[0].bottom == ["item"] and slices[0].slice_param.axis == 1
        points = [0] + list(slices[0].slice_param.slice_point) + [item.shape[0]]
        part = {top: list(range(points[i], points[i + 1])) for i, top in enumerate(slices[0].top)}
        concat, = [l for l in n.layer if list(l.top) == ["data"]]
        assert concat.type == "Concat" and concat.concat_param.axis == 1
        channels = [c for bottom in concat.bottom for c in part[bottom]]
        assert channels == [0, 1, 2, 3]
        scale = np.float32(tp.scale)
    # Caffe's DataTransformer<float>: transformed = Dtype(byte) * scale, in float32. Crops and
    # mirroring move pixels, never channels or values.
    training_data = item[channels].astype(np.float32) * scale

    pred, calls = _fake_caffe_predictor(tmp_path, monkeypatch, gpu=None)
    E.predict_file(pred, out / "test" / "image" / f"{key}.png", out / "test" / "trimap" / f"{key}.png")
    assert calls["shape"] == (1, 4, 64, 64)
    got = calls["data"][0, :, :40, :52]
    # the image must tell R from B (else a BGR swap would go unseen) and hold unknown pixels;
    # the tolerance is far below one level (1/255): a float32 rounding of byte / 255 only
    assert np.count_nonzero(item[0] != item[2]) > 100 and np.any(item[3] == 128)
    np.testing.assert_allclose(got, training_data, rtol=1e-6, atol=0)


def test_pad_to_multiple():
    x = np.arange(6.0).reshape(2, 3)
    p, (h, w) = E.pad_to_multiple(x, 4)
    assert p.shape == (4, 4) and (h, w) == (2, 3)
    assert np.array_equal(p[:2, :3], x) and np.array_equal(p[3], [3, 4, 5, 5])


def test_model_without_pycaffe_is_a_clear_error(dataset, monkeypatch):
    root, data = dataset
    (root / "d.prototxt").write_text("")
    (root / "w.caffemodel").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "caffe", None)   # import caffe -> ImportError
    rc = E.main(["--model", str(root / "d.prototxt"), "--weights", str(root / "w.caffemodel"),
                 "--images", str(root / "images"), "--gt", str(root / "gt"),
                 "--trimap", str(root / "trimap"), "--no-progress"])
    assert rc == 1


# ----------------------------------------------------------------------------- baselines, figures
def test_baselines_and_figures_in_one_table(dataset, capsys):
    root, data = dataset
    rc = E.main(["--pred", str(root / "pred"), "--images", str(root / "images"), "--gt", str(root / "gt"),
                 "--trimap", str(root / "trimap"), "--baselines", "cf,knn", "--out", str(root / "out"),
                 "--json", str(root / "r.json"), "--figures", str(root / "figs"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "== cf" in out and "== knn" in out and "== mean per method" in out
    js = json.loads((root / "r.json").read_text())
    assert set(js["methods"]) == {"prediction", "cf", "knn"}
    assert js["method"] == "prediction" and set(js["per_image"]) == {"a", "b", "c"}
    for m in ("cf", "knn"):
        # the mattes and the record that lets a rerun reuse them (tests/test_resume.py)
        assert sorted(os.listdir(root / "out" / m)) == [".predictions.json", "a.png", "b.png", "c.png"]
        # an easy synthetic composite: both baselines beat the noisy prediction
        assert js["methods"][m]["mean"]["sad"] < js["mean"]["sad"]
        source = js["methods"][m]["source"]
        assert source["baseline"] == m and source["images"] == str(root / "images")
        assert source["mattes"] == str(root / "out" / m) and source["key"]["baseline"] == m
    assert js["methods"]["prediction"]["source"] == {"predictions": str(root / "pred")}
    for f in ("sad.png", "mse.png", "qualitative.png"):
        im = np.asarray(Image.open(root / "figs" / f))
        assert im.ndim == 3 and im.shape[0] > 100 and im.shape[1] > 100


def test_handcrafted_baseline():
    from dmpn.baselines import handcrafted
    img, gt, tri, pred = synth(0)
    alpha = handcrafted(img / 255.0, E.trimap_to_01(tri))
    assert alpha.shape == gt.shape and alpha.min() >= 0 and alpha.max() <= 1
    # a hard-edged propagation: far better than a flat 0.5 over the unknown region
    flat = E.trimap_to_01(tri)
    assert M.sad(M.force_known(alpha, tri), gt / 255.0, tri) < 0.5 * M.sad(flat, gt / 255.0, tri)


@pytest.mark.parametrize("side", [0.0, 1.0])
def test_baselines_take_a_trimap_with_one_side_known(side):
    # e.g. a semi-transparent object with no opaque core: pymatting refuses such a trimap, the
    # Laplacian energies' minimiser is the known side's constant
    from dmpn.baselines import BASELINES, get_baseline
    rng = np.random.default_rng(3)
    img = rng.random((24, 20, 3))
    tri = np.full((24, 20), 0.5)
    tri[:5] = side
    for name in BASELINES:
        alpha = get_baseline(name)(img, tri)
        assert alpha.shape == tri.shape
        np.testing.assert_allclose(alpha, side, atol=1e-6, err_msg=name)


def test_baseline_names():
    from dmpn.baselines import BASELINES, parse_baselines
    assert parse_baselines("cf, knn,cf") == ["cf", "knn"]
    assert parse_baselines("all") == list(BASELINES)
    with pytest.raises(ValueError, match="bogus"):
        parse_baselines("bogus")


# ----------------------------------------------------------------------------- real data
@pytest.mark.skipif(not os.path.isdir(REAL), reason="alphamatting_lowres not present")
def test_real_data_ground_truth_scores_zero(tmp_path):
    for sub, src in (("gt", "alpha"), ("trimap", "trimap1"), ("pred", "alpha")):
        os.makedirs(tmp_path / sub)
        os.symlink(os.path.join(REAL, src, "GT01.png"), tmp_path / sub / "GT01.png")
    res = E.score_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "trimap")
    assert res.per_image["GT01"] == {"sad": 0.0, "mse": 0.0, "grad": 0.0, "conn": 0.0}


def test_cli_python_predictor_option(dataset, monkeypatch, capsys):
    root, data = dataset
    (root / "mypred.py").write_text(
        "import numpy as np\n"
        "def flat(image, trimap01):\n"
        "    return np.where(trimap01 == 0.5, 0.25, trimap01)\n")
    monkeypatch.syspath_prepend(str(root))
    rc = E.main(["--predictor", "mypred:flat", "--images", str(root / "images"), "--gt", str(root / "gt"),
                 "--trimap", str(root / "trimap"), "--out", str(root / "out"), "--json", str(root / "r.json"),
                 "--no-progress"])
    assert rc == 0
    assert "== flat" in capsys.readouterr().out
    js = json.loads((root / "r.json").read_text())
    assert js["method"] == "flat" and set(js["per_image"]) == {"a", "b", "c"}
    assert np.unique(np.asarray(Image.open(root / "out" / "flat" / "a.png"))).tolist() == [0, 64, 255]


@pytest.mark.parametrize("body,shown", [
    ("np.full(trimap01.shape, np.nan)", "returned 720 non-finite value(s) (NaN or inf) for "),
    ("np.where(trimap01 == 1, np.inf, 0.5)", "non-finite value(s) (NaN or inf) for "),
    ("np.round(trimap01 * 255)", "returned values from 0 to 255 for "),
    ("np.zeros((2, 2))", "returned shape (2, 2) for ")])
def test_cli_predictor_output_that_is_no_matte_is_refused(dataset, monkeypatch, capsys, body, shown):
    """NaN (a diverged net), inf, a 0-255 matte or another shape: a one-line error naming the
    image and exit status 1, not a matte clipped into believable scores (NaN had become 0, 255
    became 1) or a traceback."""
    root, data = dataset
    module = f"badpred{abs(hash(body))}"  # one module a case: Python caches them by name
    (root / f"{module}.py").write_text(f"import numpy as np\ndef f(image, trimap01):\n    return {body}\n")
    monkeypatch.syspath_prepend(str(root))
    rc = E.main(["--predictor", f"{module}:f", "--images", str(root / "images"), "--gt", str(root / "gt"),
                 "--trimap", str(root / "trimap"), "--out", str(root / "out"), "--json", str(root / "r.json"),
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and shown + str(root / "images" / "a.png") in err[0], err
    assert not (root / "r.json").exists() and not (root / "out" / "f" / "a.png").exists()


def test_cli_image_a_baseline_cannot_take_is_named(tmp_path, capsys):
    """Closed-form matting's 3 x 3 windows need an image of at least 3 x 3: a 2 x 5 image is a
    one-line error naming it (exit status 2), not a traceback; KNN takes it."""
    for sub, arr in (("images", np.full((2, 5, 3), 80, np.uint8)),
                     ("trimap", np.array([[0, 128, 128, 128, 255]] * 2, np.uint8)),
                     ("gt", np.array([[0, 60, 120, 180, 255]] * 2, np.uint8))):
        os.makedirs(tmp_path / sub)
        save(tmp_path / sub / "tiny.png", arr)
    args = ["--images", str(tmp_path / "images"), "--gt", str(tmp_path / "gt"), "--trimap",
            str(tmp_path / "trimap"), "--out", str(tmp_path / "out"), "--no-progress"]
    rc = E.main(["--baselines", "cf"] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].endswith(
        f"{tmp_path / 'images' / 'tiny.png'}: closed-form matting needs an image of at least 3 x 3 "
        "pixels, got 2 x 5"), err
    assert E.main(["--baselines", "knn"] + args) == 0


def test_cli_predictor_that_cannot_load(dataset, capsys):
    root, data = dataset
    rc = E.main(["--predictor", "no_such_module_xyz:f", "--images", str(root / "images"),
                 "--gt", str(root / "gt"), "--trimap", str(root / "trimap"), "--no-progress"])
    assert rc == 1 and "no_such_module_xyz" in capsys.readouterr().err


# ----------------------------------------------------------------------------- review fixes
def test_trimap_values_other_than_128_are_predicted_unknown_but_not_scored(dataset, capsys):
    """Deep Image Matting's MATLAB code scores trimap == 128 only; other values between 1 and 254
    are unknown for predictors (design note, section 2) but not scored, with one warning a file."""
    root, data = dataset
    img, gt, tri, pred = data["a"]
    odd = tri.copy()
    band = np.argwhere(tri == 128)[:7]
    odd[tuple(band.T)] = 100
    save(root / "trimap" / "a.png", odd)
    assert np.array_equal(read_trimap(root / "trimap" / "a.png"), tri)  # prediction: all unknown
    scored = read_trimap(root / "trimap" / "a.png", scoring=True)
    assert np.count_nonzero(scored == 128) == np.count_nonzero(tri == 128) - 7
    res = E.score_folders(root / "pred", root / "gt", root / "trimap")
    again = E.score_folders(root / "pred", root / "gt", root / "trimap")
    want = expected(gt, scored, pred)
    for k in want:
        assert res.per_image["a"][k] == pytest.approx(want[k], rel=1e-12, abs=1e-15)
    assert again.per_image == res.per_image
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one warning for the file, however often it is scored
    assert str(root / "trimap" / "a.png") in err[0] and " 7 trimap pixel(s)" in err[0]
    assert "taken as unknown; a scoring leaves them out" in err[0]
    # and the scores say so, with the count (the table's note and the JSON's "notes")
    assert res.notes == {"a": "7 trimap pixel(s) with values other than 0, 128 and 255 taken as "
                              "unknown and not scored"}
    assert E.results_to_json([res])["methods"]["prediction"]["notes"] == res.notes
    # the predictor sees them as unknown
    seen = []
    E.predict_folder(lambda image, t01: seen.append(t01) or t01, root / "images", root / "trimap",
                     root / "out", names=["a"], progress=False)
    assert np.all(seen[0][tuple(band.T)] == 0.5)


def test_trimap_scoring_region_in_16_bit_and_float_files(tmp_path):
    """The region scored is what the MATLAB code scores after im2uint8: a value that rounds to
    128 on the 8-bit scale, whichever "half" a 16-bit or float trimap uses."""
    t16 = np.array([[0, 128 * 257, 30000, 32768, 33024, 32767, 33025, 65535]], np.uint16)
    path = save(tmp_path / "t16.png", t16)
    assert read_trimap(path).tolist() == [[0] + [128] * 6 + [255]]
    n = E.TRIMAP_NOT_SCORED
    assert read_trimap(path, scoring=True).tolist() == [[0, 128, n, 128, 128, n, n, 255]]
    tf = np.array([[0, 0.5, 128 / 255, 0.5039, 0.4999, 0.504, 0.25, 1]], np.float32)
    path = tmp_path / "tf.tif"
    skio.imsave(path, tf, check_contrast=False)
    assert read_trimap(path).tolist() == [[0] + [128] * 6 + [255]]
    assert read_trimap(path, scoring=True).tolist() == [[0, 128, 128, 128, n, n, n, 255]]


def test_16_bit_grey_alpha_keeps_its_precision(tmp_path):
    a = np.array([[0, 1000, 40000, 65535]], np.uint16)
    np.testing.assert_allclose(read_alpha(save(tmp_path / "a.png", a)), a / 65535.0, rtol=0, atol=1e-15)


def test_score_predictor_scores_the_names_predicted_now(dataset):
    """An earlier run's PNGs in the output folder (other names) are neither scored nor an error."""
    root, data = dataset

    def half(image, trimap01):
        return np.where(trimap01 == 0.5, 0.5, trimap01)

    E.score_predictor(half, root / "images", root / "trimap", root / "gt", root / "out" / "half",
                      name="half", progress=False)
    for sub in ("images", "gt", "trimap"):
        os.makedirs(root / "subset" / sub)
        for n in "ab":
            os.link(root / sub / f"{n}.png", root / "subset" / sub / f"{n}.png")
    res = E.score_predictor(half, root / "subset" / "images", root / "subset" / "trimap",
                            root / "subset" / "gt", root / "out" / "half", name="half", progress=False)
    assert sorted(res.per_image) == ["a", "b"]
    assert sorted(res.paths) == ["a", "b"]
    assert os.path.exists(root / "out" / "half" / "c.png")  # left alone, not scored


def test_predictor_module_in_the_current_folder(dataset):
    """--predictor MODULE:FUNC finds MODULE in the current folder (python puts tools/ on sys.path,
    not the current folder)."""
    root, data = dataset
    work = root / "work"
    work.mkdir()
    (work / "mypred_cwd.py").write_text(
        "import numpy as np\n"
        "def flat(image, trimap01):\n"
        "    return np.where(trimap01 == 0.5, 0.25, trimap01)\n")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "evaluate.py"), "--predictor",
                        "mypred_cwd:flat", "--images", str(root / "images"), "--gt", str(root / "gt"),
                        "--trimap", str(root / "trimap"), "--out", str(root / "out"), "--no-progress"],
                       capture_output=True, text=True, cwd=work)
    assert p.returncode == 0, p.stderr
    assert "== flat" in p.stdout
    assert str(work) not in sys.path
    rc, out, err = cli("--help")
    assert "current folder" in " ".join(out.split())


def test_unwritable_outputs_are_one_line_errors_before_the_work(dataset):
    root, data = dataset
    (root / "afile").write_text("x")
    cases = [("--json", root / "afile" / "r.json", str(root / "afile")),   # parent is a file
             ("--json", root / "gt", str(root / "gt")),                      # a folder
             ("--figures", root / "afile" / "figs", str(root / "afile"))]
    for option, path, named in cases:
        msg = _bad(root, option, path)
        assert named in msg and "Traceback" not in msg, msg
    # and for the predictions, before predicting
    rc, out, err = cli("--baselines", "cf", "--images", root / "images", "--gt", root / "gt",
                       "--trimap", root / "trimap", "--out", root / "afile", "--no-progress")
    assert rc == 2 and str(root / "afile") in err and len(err.strip().splitlines()) == 1, err


def test_unreadable_folder_is_named(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()

    def refuse(path):  # as for a folder without read permission (tests may run as root)
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr(os, "listdir", refuse)
    with pytest.raises(InputError, match=r"locked: cannot read the folder \(Permission denied\)"):
        list_images(tmp_path / "locked")


def test_knn_baseline_on_an_image_smaller_than_its_neighbourhood():
    from dmpn.baselines import knn
    rng = np.random.default_rng(0)
    for shape in ((4, 4), (3, 5), (2, 3)):
        tri = np.full(shape, 0.5)
        tri.flat[0], tri.flat[-1] = 0.0, 1.0
        alpha = knn(rng.random(shape + (3,)), tri)
        assert alpha.shape == shape and alpha.min() >= 0 and alpha.max() <= 1
        assert alpha.flat[0] == pytest.approx(0, abs=0.05) and alpha.flat[-1] == pytest.approx(1, abs=0.05)


def test_closed_form_baseline_names_an_image_too_small_for_its_windows():
    from dmpn.baselines import closed_form
    tri = np.full((2, 6), 0.5)
    tri[:, 0], tri[:, -1] = 0.0, 1.0
    with pytest.raises(ValueError, match="at least 3 x 3 pixels, got 2 x 6"):
        closed_form(np.random.default_rng(0).random((2, 6, 3)), tri)
    tri = np.full((3, 6), 0.5)
    tri[:, 0], tri[:, -1] = 0.0, 1.0
    assert closed_form(np.random.default_rng(0).random((3, 6, 3)), tri).shape == (3, 6)


def test_float_option_must_be_finite(dataset):
    root, data = dataset
    for value in ("nan", "inf", "0"):
        rc, out, err = cli("--baselines", "handcrafted", "--sigma", value, "--images", root / "images",
                           "--gt", root / "gt", "--trimap", root / "trimap")
        assert rc == 2 and "--sigma" in err and "Traceback" not in err, err


def test_sigma_reaches_the_handcrafted_baseline(dataset):
    root, _ = dataset
    mattes = {}
    for sigma in ("0.1", "0.03"):
        out = root / f"out{sigma}"
        rc, _, err = cli("--baselines", "handcrafted", "--sigma", sigma, "--images", root / "images",
                         "--gt", root / "gt", "--trimap", root / "trimap", "--out", out)
        assert rc == 0, err
        mattes[sigma] = np.asarray(Image.open(out / "handcrafted" / "a.png"))
    assert not np.array_equal(mattes["0.1"], mattes["0.03"])


# ----------------------------------------------------------------------------- predict.py
PREDICT = os.path.join(ROOT, "tools", "predict.py")


def predict_cli(*args, cwd=ROOT):
    p = subprocess.run([sys.executable, PREDICT, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def test_predict_unusable_out_is_a_one_line_error(dataset):
    root, data = dataset
    (root / "afile").write_text("x")
    (root / "d.prototxt").write_text("")
    (root / "w.caffemodel").write_bytes(b"")
    model = ("--model", root / "d.prototxt", "--weights", root / "w.caffemodel")
    for image, trimap, out, named in (
            (root / "images", root / "trimap", root / "afile", root / "afile"),   # folder mode, a file
            (root / "images" / "a.png", root / "trimap" / "a.png", root / "afile" / "x.png", root / "afile"),
            (root / "images" / "a.png", root / "trimap" / "a.png", root / "afile", root / "afile")):
        rc, out_, err = predict_cli(*model, "--image", image, "--trimap", trimap, "--out", out)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and str(named) in lines[0], err


def test_predict_without_pycaffe_is_a_one_line_error(dataset, monkeypatch, capsys):
    from dmpn import predict
    root, data = dataset
    (root / "d.prototxt").write_text("")
    (root / "w.caffemodel").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "caffe", None)   # import caffe -> ImportError
    rc = predict.main(["--model", str(root / "d.prototxt"), "--weights", str(root / "w.caffemodel"),
                       "--image", str(root / "images" / "a.png"), "--trimap", str(root / "trimap" / "a.png"),
                       "--out", str(root / "o.png")])
    err = capsys.readouterr().err
    assert rc == 1 and "pycaffe is not importable" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def slim_model(tmp_path_factory):
    """The slim deploy net with identity BatchNorm statistics (an untrained net otherwise)."""
    from conftest import identity_batchnorm, require_caffe
    caffe = require_caffe()
    deploy = os.path.join(ROOT, "prototxt", "slim_deploy.prototxt")
    weights = tmp_path_factory.mktemp("slim") / "w.caffemodel"
    identity_batchnorm(caffe.Net(deploy, caffe.TEST)).save(str(weights))
    return deploy, weights


def test_the_matte_is_the_solve_on_the_image_grid_whatever_the_padding(slim_model):
    """The CNN sees the image padded to multiples of 32, but the propagation runs on the image's
    own H x W grid: the matte is the reference solve of the net's affinities cropped to H x W,
    not the solve on the padded grid (which differs near the padded borders)."""
    from dmpn.propagation import solve_alpha
    deploy, weights = slim_model
    pred = E.caffe_predictor(deploy, weights)
    rng = np.random.default_rng(3)
    h, w = 40, 50                                # padded to 64 x 64
    image = rng.random((h, w, 3))
    tri = np.full((h, w), 0.5)   # the unknown region reaches the right and bottom borders
    tri[:, :5], tri[:5, 5:] = 0, 1
    alpha = pred(image, tri)
    t = np.where(tri == 0.5, 128 / 255, tri)
    affinity = pred.net.blobs["affinity"].data[0].astype(np.float64)
    assert affinity.shape == (2, 64, 64)
    unpadded = solve_alpha(affinity[:, :h, :w], t)
    assert np.abs(alpha - np.clip(unpadded, 0, 1)).max() < 1e-4   # the solve's stated accuracy
    padded_t = np.pad(t, ((0, 64 - h), (0, 64 - w)), mode="edge")
    on_padded_grid = solve_alpha(affinity, padded_t)[:h, :w]
    assert np.abs(alpha - on_padded_grid).max() > 1e-3     # what the padding used to change


def test_a_training_net_as_model_is_refused(dataset, slim_model, tmp_path):
    """A train_val prototxt as --model reads its LMDB into `data` and its `alpha` blob is the
    ground truth: it would score perfectly. The tools refuse it, naming the file."""
    root, _ = dataset
    _, weights = slim_model
    train_val = os.path.join(ROOT, "prototxt", "slim_train_val.prototxt")
    rc, out, err = predict_cli("--model", train_val, "--weights", weights, "--image", root / "images",
                               "--trimap", root / "trimap", "--out", tmp_path / "m", "--no-progress")
    assert rc == 2 and f"{train_val}: not a deploy net" in err and "'item'" in err, err
    rc, out, err = cli("--model", train_val, "--weights", weights, "--images", root / "images",
                       "--gt", root / "gt", "--trimap", root / "trimap", "--out", tmp_path / "ev",
                       "--no-progress")
    assert rc == 2 and f"{train_val}: not a deploy net" in err and "Traceback" not in err, err
    one_input = tmp_path / "one_input.prototxt"
    one_input.write_text(open(slim_model[0]).read().replace('top: "trimap"\n  input_param',
                                                            'top: "tri"\n  input_param'))
    with pytest.raises(InputError, match="not a deploy net: its inputs are 'data', 'tri', not"):
        E.caffe_predictor(one_input, weights)
    old_deploy = tmp_path / "old_deploy.prototxt"   # one input, as before the unpadded solve
    old_deploy.write_text(re.sub(r'layer \{\n  name: "trimap"\n  type: "Input"(.|\n)*?\n\}\n',
                                 'layer { name: "image" type: "Slice" bottom: "data" top: "image" top: "trimap" '
                                 'slice_param { slice_point: 3 axis: 1 } }\n', open(slim_model[0]).read(), count=1))
    with pytest.raises(InputError, match="its only input is 'data' .a deploy net from before"):
        E.caffe_predictor(old_deploy, weights)
    # A data layer of the TRAIN phase only is not part of the TEST net the predictor builds.
    both = tmp_path / "both.prototxt"
    both.write_text('layer { name: "item" type: "Data" top: "item" include { phase: TRAIN } '
                    'data_param { source: "nowhere" batch_size: 1 backend: LMDB } }\n'
                    + open(slim_model[0]).read())
    E.check_deploy_prototxt(both)
    garbage = tmp_path / "garbage.prototxt"
    garbage.write_text("layer { name: ")
    with pytest.raises(InputError, match="garbage.prototxt: not a deploy prototxt"):
        E.caffe_predictor(garbage, weights)
    # A deploy net with a layer whose bottom nothing makes: refused (Caffe aborts on it), after
    # the deploy checks, from the one parse of the file.
    orphan = tmp_path / "orphan.prototxt"
    orphan.write_text(open(slim_model[0]).read() + 'layer { name: "r" type: "ReLU" bottom: "nowhere" top: "r" }\n')
    with pytest.raises(InputError, match=r"orphan\.prototxt: layer 'r' takes bottom 'nowhere', which no earlier "
                                         r"layer of its TEST net produces"):
        E.caffe_predictor(orphan, weights)


def test_weights_caffe_cannot_load_are_one_line_errors(dataset, slim_model, tmp_path):
    """Caffe aborts the process (SIGABRT, a stack dump) on weights it cannot copy: the tools
    check them first and name the file; and a --gpu the machine lacks."""
    root, _ = dataset
    deploy, weights = slim_model
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(b"\x00\x01not a net" * 10)
    paper_deploy = os.path.join(ROOT, "prototxt", "deploy.prototxt")
    import caffe
    hdf5 = tmp_path / "slim.caffemodel.h5"  # Caffe's HDF5 weights, checked alike
    caffe.Net(str(deploy), str(weights), caffe.TEST).save_hdf5(str(hdf5))
    for model, w, message in ((deploy, garbage, f"{garbage}"),
                              (paper_deploy, weights, "conv1_1"),   # slim weights, paper net
                              (paper_deploy, hdf5, f"{hdf5}: layer ")):
        rc, _, err = predict_cli("--model", model, "--weights", w, "--image", root / "images" / "a.png",
                                 "--trimap", root / "trimap" / "a.png", "--out", tmp_path / "a.png")
        last = err.strip().splitlines()[-1]
        assert rc == 2 and last.startswith("predict: error: ") and message in last, err
    from dmpn.caffe_checks import gpu_count
    if not gpu_count()[0]:
        rc, _, err = predict_cli("--model", deploy, "--weights", weights, "--image", root / "images" / "a.png",
                                 "--trimap", root / "trimap" / "a.png", "--out", tmp_path / "a.png", "--gpu", "0")
        assert rc == 2 and "--gpu" in err and "Traceback" not in err, err


def test_image_too_large_for_the_nets_pooling_masks_is_refused(tmp_path, slim_model):
    """Over 2^24 padded pixels the float32 pooling masks cannot index the plane exactly and the
    C++ Unpooling layer aborts the process: predict.py refuses the image first, naming it."""
    deploy, weights = slim_model
    image, trimap = tmp_path / "big.png", tmp_path / "big_trimap.png"
    save(image, np.full((4097, 4096, 3), 90, np.uint8))  # padded to 4128 x 4096
    tri = np.full((4097, 4096), 128, np.uint8)
    tri[:8] = 0
    save(trimap, tri)
    rc, _, err = predict_cli("--model", deploy, "--weights", weights, "--image", image,
                             "--trimap", trimap, "--out", tmp_path / "out.png")
    last = err.strip().splitlines()[-1]
    assert rc == 2 and last.startswith(f"predict: error: {image}: 4097 x 4096 pixels (padded to "
                                       "4128 x 4096 for the network) is more than the 16777216"), err
    assert not (tmp_path / "out.png").exists()


def test_trimap_without_known_pixel_is_refused_before_the_net_runs(dataset, slim_model):
    """The C++ solve aborts the process (SIGABRT) on a trimap with no known pixel: predict.py and
    evaluate.py --model refuse it first, naming the file; the baselines still take it."""
    root, data = dataset
    deploy, weights = slim_model
    save(root / "trimap" / "b.png", np.full(data["b"][2].shape, 128, np.uint8))
    no_known = str(root / "trimap" / "b.png")
    rc, out, err = predict_cli("--model", deploy, "--weights", weights, "--image", root / "images" / "b.png",
                               "--trimap", no_known, "--out", root / "b.png")
    assert rc == 2 and no_known in err and "no known pixel" in err, err
    assert not (root / "b.png").exists()
    rc, out, err = predict_cli("--model", deploy, "--weights", weights, "--image", root / "images",
                               "--trimap", root / "trimap", "--out", root / "mattes", "--no-progress")
    assert rc == 2 and no_known in err and "no known pixel" in err, err
    rc, out, err = cli("--model", deploy, "--weights", weights, "--baselines", "cf,knn,handcrafted",
                       "--images", root / "images", "--gt", root / "gt", "--trimap", root / "trimap",
                       "--out", root / "ev", "--no-progress")
    last = err.strip().splitlines()[-1]  # after Caffe's log of loading the net
    assert rc == 2 and last.startswith("evaluate.py: error: " + no_known) and "no known pixel" in last, err
    assert not (root / "ev" / "model").exists()  # refused before predicting anything
    for name in ("cf", "knn", "handcrafted"):    # the baselines take it
        res = E.score_predictor(E.load_predictor(f"dmpn.baselines:{'closed_form' if name == 'cf' else name}"),
                                root / "images", root / "trimap", root / "gt", root / "bl" / name,
                                name=name, progress=False)
        assert sorted(res.per_image) == ["a", "b", "c"]


def test_predict_never_overwrites_its_inputs(dataset, slim_model):
    """--out naming the image, the trimap or their folder is refused before anything is
    written: the matte would replace the photograph."""
    root, _ = dataset
    deploy, weights = slim_model
    before = {p: p.read_bytes() for p in (root / "images").iterdir()}
    before.update({p: p.read_bytes() for p in (root / "trimap").iterdir()})
    image, trimap = root / "images" / "a.png", root / "trimap" / "a.png"
    for out in (image, trimap, root / "images" / ".." / "trimap" / "a.png"):
        rc, _, err = predict_cli("--model", deploy, "--weights", weights, "--image", image,
                                 "--trimap", trimap, "--out", out)
        assert rc == 2 and "would overwrite" in err and "Traceback" not in err, err
    for out in (root / "images", root / "trimap", root / "images" / "."):
        rc, _, err = predict_cli("--model", deploy, "--weights", weights, "--image", root / "images",
                                 "--trimap", root / "trimap", "--out", out, "--no-progress")
        assert rc == 2 and "would overwrite" in err, err
    rc, _, err = predict_cli("--model", deploy, "--weights", weights, "--image", root / "images",
                             "--trimap", root / "trimap", "--out", root / "images", "--no-progress")
    assert sorted(os.listdir(root / "images")) == ["a.png", "b.png", "c.png"]
    assert all(p.read_bytes() == b for p, b in before.items())


def test_predict_arguments_that_do_not_fit(dataset, slim_model):
    root, data = dataset
    deploy, weights = slim_model
    rc, _, err = predict_cli("--model", deploy, "--weights", weights, "--image", root / "images" / "a.png",
                             "--trimap", root / "trimap", "--out", root / "o.png")
    assert rc == 2 and "--trimap is a folder, so --image must be one too" in err, err
    rc, _, err = predict_cli("--model", deploy, "--weights", weights, "--image", root / "images" / "a.png",
                             "--trimap", root / "trimap" / "a.png", "--out", root / "o.jpg")
    assert rc == 2 and "must end in .png" in err and not (root / "o.jpg").exists(), err
    # Folder mode checks every pair before the first prediction: nothing written for a
    # mismatch in the last image.
    save(root / "trimap" / "c.png", np.zeros((7, 9), np.uint8))
    rc, _, err = predict_cli("--model", deploy, "--weights", weights, "--image", root / "images",
                             "--trimap", root / "trimap", "--out", root / "mattes", "--no-progress")
    assert rc == 2 and os.path.join("trimap", "c.png") in err and "does not match" in err, err
    assert not (root / "mattes").exists()


def test_one_pixel_high_images_keep_their_shape(tmp_path):
    """A 1 x W image: a predictor's 1 x 1 x 1 x W output is its matte, not a W-vector."""
    w = 9
    save(tmp_path / "i.png", np.zeros((1, w, 3), np.uint8))
    tri = np.full((1, w), 128, np.uint8)
    tri[0, 0], tri[0, -1] = 0, 255
    save(tmp_path / "t.png", tri)
    alpha = E.predict_file(lambda image, t01: t01[None, None], tmp_path / "i.png", tmp_path / "t.png")
    assert alpha.shape == (1, w) and alpha[0, 0] == 0 and alpha[0, -1] == 1
    with pytest.raises(E.PredictorError, match="predictor returned shape"):  # W x 1: never reshaped
        E.predict_file(lambda image, t01: t01.T, tmp_path / "i.png", tmp_path / "t.png")


def test_a_trimap_with_lossy_noise_is_named_when_predicting(tmp_path, capsys):
    """A JPEG trimap's noise (3, 252, ...) turns known pixels into unknown ones for the
    predictor: predicting from it warns once, naming the file and the count."""
    img, gt, tri, pred = synth(0)
    save(tmp_path / "i.png", img)
    noisy = tri.copy()
    noisy[0, :5], noisy[-1, :3] = 3, 252
    save(tmp_path / "t.png", noisy)
    E.predict_file(lambda image, t01: t01, tmp_path / "i.png", tmp_path / "t.png")
    E.predict_file(lambda image, t01: t01, tmp_path / "i.png", tmp_path / "t.png")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "t.png") in err[0] and " 8 trimap pixel(s)" in err[0], err
    assert "taken as unknown" in err[0]


def test_a_trimap_without_known_pixels_warns_for_a_baseline(tmp_path, capsys):
    """An all-unknown trimap: the network refuses it (its solve is singular); a baseline takes
    it, but its matte says nothing of the image, so a warning names the file, once."""
    img, gt, tri, pred = synth(0)
    save(tmp_path / "i.png", img)
    save(tmp_path / "t.png", np.full_like(tri, 128))
    E.predict_file(lambda image, t01: t01, tmp_path / "i.png", tmp_path / "t.png")
    E.predict_file(lambda image, t01: t01, tmp_path / "i.png", tmp_path / "t.png")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "t.png") in err[0], err
    assert "no known pixel" in err[0] and "warning" in err[0] and "a baseline or --predictor" in err[0]
    save(tmp_path / "t.png", tri)  # known pixels: no warning
    E.predict_file(lambda image, t01: t01, tmp_path / "i.png", tmp_path / "t.png")
    assert capsys.readouterr().err == ""


def test_grid_rows_must_be_positive(dataset):
    root, _ = dataset
    rc, _, err = cli("--pred", root / "pred", "--gt", root / "gt", "--trimap", root / "trimap",
                     "--figures", root / "fig", "--grid-rows", "0")
    assert rc == 2 and "--grid-rows" in err and not (root / "fig").exists(), err


def test_python_layer_deploy_net_gives_the_same_matte(slim_model, tmp_path):
    """The Python flavour's deploy net (its AffinityExp and SparseLaplacianSolve layers) crops
    and solves as the C++ one: the same matte from the same weights on a padded image."""
    from dmpn import net as N
    deploy, weights = slim_model
    py_deploy = tmp_path / "py_deploy.prototxt"
    py_deploy.write_text(str(N.deploy(N.NetConfig(width=N.SLIM_WIDTH, flavour="python"), 40, 50)))
    rng = np.random.default_rng(5)
    image = rng.random((37, 45, 3))                 # padded to 64 x 64 for the CNN
    tri = np.full((37, 45), 0.5)
    tri[:, :4], tri[:6, 4:] = 0, 1
    cpp = E.caffe_predictor(deploy, weights)(image, tri)
    py = E.caffe_predictor(py_deploy, weights)(image, tri)
    assert cpp.shape == py.shape == (37, 45)
    assert np.abs(cpp - py).max() < 1e-4  # the C++ iterative solve against the Python reference


def test_composites_put_the_matte_over_a_new_background(dataset, slim_model, tmp_path):
    """predict.py --composite BG: round(a F + (1 - a) BG) with F estimated from the image and
    the matte; BG a colour or an image file; beside a single matte, or in --out/composites/."""
    from dmpn import predict as P
    root, data = dataset
    img, gt, tri, _ = data["a"]
    alpha = gt / 255.0
    green = P.composite(img / 255.0, alpha, P.background("#00ff00"))
    assert green.shape == img.shape and green.dtype == np.uint8
    assert (green[gt == 0] == [0, 255, 0]).all()                          # pure background
    assert np.abs(green[gt == 255].astype(int) - img[gt == 255]).max() <= 2  # the image itself
    save(tmp_path / "bg.png", np.tile(np.array([[[200, 10, 10]]], np.uint8), (5, 7, 1)))
    assert P.background(str(tmp_path / "bg.png"))(24, 30).shape == (24, 30, 3)  # resized
    with pytest.raises(InputError, match="nocolour: --composite wants an image file or a colour"):
        P.background("nocolour")

    deploy, weights = slim_model
    out = tmp_path / "one" / "a.png"
    rc, stdout, err = predict_cli("--model", deploy, "--weights", weights, "--image", root / "images" / "a.png",
                                  "--trimap", root / "trimap" / "a.png", "--out", out, "--force-known",
                                  "--composite", "green")
    assert rc == 0, err
    comp = np.asarray(Image.open(tmp_path / "one" / "a_composite.png"))
    assert comp.shape == img.shape and (comp[tri == 0] == [0, 128, 0]).all()  # matplotlib's green
    rc, stdout, err = predict_cli("--model", deploy, "--weights", weights, "--image", root / "images",
                                  "--trimap", root / "trimap", "--out", tmp_path / "many", "--no-progress",
                                  "--composite", tmp_path / "bg.png")
    assert rc == 0 and "3 composites in" in stdout, err
    assert sorted(p.name for p in (tmp_path / "many" / "composites").iterdir()) == ["a.png", "b.png", "c.png"]
    rc, _, err = predict_cli("--model", deploy, "--weights", weights, "--image", root / "images",
                             "--trimap", root / "trimap", "--out", tmp_path / "none", "--composite", "nocolour")
    assert rc == 2 and "nocolour: --composite wants" in err and not (tmp_path / "none").exists(), err
    # The background file is an input too: a composite may not overwrite it.
    bg_as_out = tmp_path / "one" / "a_composite.png"
    rc, _, err = predict_cli("--model", deploy, "--weights", weights, "--image", root / "images" / "a.png",
                             "--trimap", root / "trimap" / "a.png", "--out", out, "--composite", bg_as_out)
    assert rc == 2 and f"{bg_as_out}: the output is the input" in err, err
    (tmp_path / "many2").mkdir()
    (tmp_path / "many2" / "composites").write_text("a file where the folder goes")
    rc, _, err = predict_cli("--model", deploy, "--weights", weights, "--image", root / "images",
                             "--trimap", root / "trimap", "--out", tmp_path / "many2", "--composite", "green")
    assert rc == 2 and f"{tmp_path / 'many2' / 'composites'}: exists and is not a folder" in err, err
    assert sorted(p.name for p in (tmp_path / "many2").iterdir()) == ["composites"]  # refused up front


def test_mistyped_predictions_are_refused_naming_the_file(dataset):
    """A binary matte saved as 0/1, a float matte with NaN or on the 0-255 scale: each one line
    naming the file and the reason, exit 2; a float matte off [0, 1] by rounding is clipped."""
    import tifffile
    root, data = dataset
    gt, tri = data["a"][1], data["a"][2]
    save(root / "pred" / "a.png", (gt > 127).astype(np.uint8))
    rc, out, err = cli("--pred", root / "pred", "--gt", root / "gt", "--trimap", root / "trimap")
    assert rc == 2 and out == ""
    assert err.strip().splitlines()[-1].endswith(
        f"{root / 'pred' / 'a.png'}: prediction holds only the values 0 and 1 of 255 where its "
        f"ground truth {root / 'gt' / 'a.png'} reaches 1: a 0/1 matte saved as 8-bit? save it as 0..255")
    os.remove(root / "pred" / "a.png")
    for values, reason in [
            (np.where(tri == 128, np.nan, gt / 255.0), "3 floating-point pixels are not finite (NaN or inf)"),
            (gt.astype(np.float64), "floating-point pixels span 0 to 255, outside [0, 1] (a 0-255 "
                                    "image saved as float?)")]:
        values = values.copy()
        if reason.startswith("3"):
            values[tri == 128] = gt[tri == 128] / 255.0
            values.flat[np.flatnonzero(tri == 128)[:3]] = np.nan
        tifffile.imwrite(root / "pred" / "a.tif", values.astype(np.float32))
        rc, out, err = cli("--pred", root / "pred", "--gt", root / "gt", "--trimap", root / "trimap")
        assert rc == 2 and err.strip().splitlines()[-1].endswith(f"{root / 'pred' / 'a.tif'}: {reason}"), err
    exact = gt / 255.0
    tifffile.imwrite(root / "pred" / "a.tif", exact + np.select([exact == 0, exact == 1], [-1e-9, 1e-9]))
    np.testing.assert_array_equal(read_alpha(root / "pred" / "a.tif"), exact)
    assert E.score_files(root / "pred" / "a.tif", root / "gt" / "a.png", root / "trimap" / "a.png")["sad"] == 0
