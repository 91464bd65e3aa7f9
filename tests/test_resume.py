"""Resuming an interrupted prediction run (dmpn.evaluate.predict_folder, used by tools/predict.py
and tools/evaluate.py): a matte is reused only when the record OUT/.predictions.json says the same
method made it from the same image and trimap, and the PNG is the one written then."""
import hashlib
import importlib
import itertools
import json
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from dmpn import baselines as bl
from dmpn import evaluate as E
from test_evaluate import ROOT, predict_cli, save, synth

NAMES = "abcdef"
_modules = itertools.count()


@pytest.fixture
def data(tmp_path):
    """tmp/{images,gt,trimap}/{a..f}.png"""
    for i, name in enumerate(NAMES):
        img, gt, tri, _ = synth(i)
        save(tmp_path / "images" / f"{name}.png", img)
        save(tmp_path / "gt" / f"{name}.png", gt)
        save(tmp_path / "trimap" / f"{name}.png", tri)
    return tmp_path


COUNTING = """import numpy as np
calls = []
stop_at = None    # the call that raises KeyboardInterrupt (as Ctrl-C would)


def matte(image, trimap01):
    calls.append(1)
    if stop_at is not None and len(calls) == stop_at:
        raise KeyboardInterrupt
    return np.where(trimap01 == 0.5, image[..., 0], trimap01)
"""


@pytest.fixture
def counting(data, monkeypatch):
    """A --predictor module (its own name per test) that counts its calls."""
    name = f"counting_predictor_{next(_modules)}"
    (data / f"{name}.py").write_text(COUNTING)
    monkeypatch.syspath_prepend(str(data))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def run_evaluate(root, module, *extra, out="out", json_name="r.json", resume_predictor=True):
    """tools/evaluate.py --predictor MODULE:matte [--resume-predictor] in this process: (exit
    status, the calls made, the JSON written)."""
    module.calls.clear()
    rc = E.main(["--predictor", f"{module.__name__}:matte", "--images", str(root / "images"),
                 "--gt", str(root / "gt"), "--trimap", str(root / "trimap"), "--out", str(root / out),
                 "--json", str(root / json_name), "--no-progress", *map(str, extra)]
                + (["--resume-predictor"] if resume_predictor else []))
    js = json.loads((root / json_name).read_text()) if rc == 0 else None
    return rc, len(module.calls), js


def record(folder):
    return json.loads((folder / E.PREDICTIONS_RECORD).read_text())


def test_an_interrupted_run_goes_on_where_it_stopped(data, counting, capsys):
    counting.stop_at = 3
    rc, calls, _ = run_evaluate(data, counting)
    err = capsys.readouterr().err
    out = data / "out" / "matte"
    assert rc == 130 and calls == 3
    assert "interrupted after 2 of 6 predictions" in err and str(out / E.PREDICTIONS_RECORD) in err
    assert sorted(record(out)["predictions"]) == ["a.png", "b.png"]
    assert sorted(os.listdir(out)) == [E.PREDICTIONS_RECORD, "a.png", "b.png"]   # nothing half-written

    counting.stop_at = None
    rc, calls, js = run_evaluate(data, counting)
    err = capsys.readouterr().err
    assert rc == 0 and calls == 4                      # c..f only
    assert f"{out}: reused 2 of 6 predictions from an earlier run" in err and "predicting 4" in err
    assert err.count("reused") == 1                    # one line says it
    assert set(js["per_image"]) == set(NAMES)          # all six scored
    # the same numbers and mattes as one uninterrupted run
    rc, calls, clean = run_evaluate(data, counting, out="clean", json_name="clean.json")
    assert rc == 0 and calls == 6
    assert js["per_image"] == clean["per_image"] and js["mean"] == clean["mean"]
    for n in NAMES:
        assert (out / f"{n}.png").read_bytes() == (data / "clean" / "matte" / f"{n}.png").read_bytes()

    rc, calls, again = run_evaluate(data, counting)    # nothing left to do
    assert rc == 0 and calls == 0 and again["per_image"] == clean["per_image"]
    assert "reused 6 of 6" in capsys.readouterr().err
    rc, calls, _ = run_evaluate(data, counting, "--no-resume")
    assert rc == 0 and calls == 6
    assert "not resuming: predicting all 6" in capsys.readouterr().err
    # interrupted under --no-resume: the message names the command that goes on
    counting.stop_at = 2
    rc, calls, _ = run_evaluate(data, counting, "--no-resume")
    assert rc == 130 and "the same command without --no-resume goes on from there" in capsys.readouterr().err


def test_a_python_predictor_is_reused_only_when_asked(data, counting, capsys):
    """What a --predictor loads itself (its weights, other files) is outside the record's key: its
    mattes are recorded, and reused only with --resume-predictor."""
    counting.stop_at = 3
    assert run_evaluate(data, counting, resume_predictor=False)[:2] == (130, 3)
    assert ("the same command with --resume-predictor goes on from there"
            in capsys.readouterr().err)
    counting.stop_at = None
    assert run_evaluate(data, counting, resume_predictor=False)[:2] == (0, 6)
    err = capsys.readouterr().err
    assert "not resuming: predicting all 6, the 2 an earlier run made" in err
    assert "(the same command with --resume-predictor reuses them)" in err
    assert run_evaluate(data, counting)[:2] == (0, 0)


def test_a_decorated_predictor_is_keyed_on_its_own_file(data, monkeypatch, capsys):
    """functools.wraps decorators (torch.no_grad, say) live in another file: the key is the
    predictor's own module, not the decorator's."""
    (data / "passing_decorator.py").write_text(
        "import functools\n"
        "def passing(f):\n"
        "    @functools.wraps(f)\n"
        "    def wrapper(*args):\n"
        "        return f(*args)\n"
        "    return wrapper\n")
    source = ("import numpy as np\nfrom passing_decorator import passing\n"
              "calls = []\nGAIN = {gain}\n@passing\ndef matte(image, trimap01):\n"
              "    calls.append(1)\n    return np.where(trimap01 == 0.5, GAIN * image[..., 0], trimap01)\n")
    (data / "decorated_predictor.py").write_text(source.format(gain=1.0))
    monkeypatch.syspath_prepend(str(data))
    module = importlib.import_module("decorated_predictor")
    try:
        assert run_evaluate(data, module)[:2] == (0, 6)
        (data / "decorated_predictor.py").write_text(source.format(gain=0.5))
        capsys.readouterr()
        assert run_evaluate(data, module)[:2] == (0, 6)
        assert "(different source)" in capsys.readouterr().err
    finally:
        sys.modules.pop("decorated_predictor", None)
        sys.modules.pop("passing_decorator", None)


def test_only_what_changed_is_predicted_again(data, counting, capsys):
    out = data / "out" / "matte"
    assert run_evaluate(data, counting)[:2] == (0, 6)
    capsys.readouterr()
    # a changed image and a changed trimap
    save(data / "images" / "c.png", synth(10)[0])
    tri = synth(4)[2].copy()                           # e's, with one unknown pixel made known
    tri[tuple(np.argwhere(tri == 128)[0])] = 0
    save(data / "trimap" / "e.png", tri)
    # a matte edited after it was written
    save(out / "a.png", np.zeros((24, 30), np.uint8))
    # a new image whose PNG is already there, with no entry in the record (by hand, or an older
    # version): not trusted
    for sub, arr in zip(("images", "gt", "trimap"), synth(6)[:3]):
        save(data / sub / "g.png", arr)
    save(out / "g.png", np.full((24, 30), 200, np.uint8))
    rc, calls, js = run_evaluate(data, counting)
    err = capsys.readouterr().err
    assert rc == 0 and calls == 4, err                 # a, c, e, g
    assert "2 input image(s) or trimap(s) changed since their prediction (c, e)" in err
    assert "1 PNG(s) changed since they were predicted (a)" in err
    assert f"1 PNG(s) with no entry in {E.PREDICTIONS_RECORD}" in err and "(g)" in err
    assert "reused 3 of 7" in err
    assert set(js["per_image"]) == set(NAMES) | {"g"}
    assert 200 not in np.unique(np.asarray(Image.open(out / "g.png")))
    # the record gone (or written by hand): every PNG is predicted again
    os.remove(out / E.PREDICTIONS_RECORD)
    assert run_evaluate(data, counting)[:2] == (0, 7)
    assert "7 PNG(s) with no entry" in capsys.readouterr().err


def test_another_method_never_reuses_mattes(data, counting, capsys):
    assert run_evaluate(data, counting)[:2] == (0, 6)
    capsys.readouterr()
    # the predictor's module changed: its mattes may differ
    path = data / f"{counting.__name__}.py"
    path.write_text(path.read_text() + "\n# changed\n")
    assert run_evaluate(data, counting)[:2] == (0, 6)
    err = capsys.readouterr().err
    assert "6 prediction(s) there were made by another method or model (different source)" in err
    assert "reused" not in err


def test_sigma_changes_the_handcrafted_mattes_only(data, monkeypatch, capsys):
    calls = []

    def counted(name):
        real = bl.get_baseline(name)

        def predictor(image, trimap01, **kw):
            calls.append(name)
            return real(image, trimap01, **kw)
        return predictor
    for name in ("cf", "handcrafted"):
        monkeypatch.setitem(bl._FUNCS, name, counted(name))

    def evaluate(sigma):
        calls.clear()
        rc = E.main(["--baselines", "cf,handcrafted", "--sigma", sigma, "--images", str(data / "images"),
                     "--gt", str(data / "gt"), "--trimap", str(data / "trimap"), "--out", str(data / "out"),
                     "--json", str(data / "r.json"), "--no-progress"])
        assert rc == 0
        return sorted(calls), json.loads((data / "r.json").read_text())

    assert evaluate("0.1")[0] == ["cf"] * 6 + ["handcrafted"] * 6
    capsys.readouterr()
    calls_now, js = evaluate("0.05")
    assert calls_now == ["handcrafted"] * 6            # cf does not depend on --sigma
    err = capsys.readouterr().err
    assert "made by another method or model (different sigma)" in err
    assert f"{data / 'out' / 'cf'}: reused 6 of 6" in err
    calls_back, back = evaluate("0.1")                 # back to 0.1: those mattes are gone
    assert calls_back == ["handcrafted"] * 6
    assert back["methods"]["handcrafted"] != js["methods"]["handcrafted"]


def test_an_unreadable_record_is_named_and_everything_predicted_again(data, counting, capsys):
    out = data / "out" / "matte"
    assert run_evaluate(data, counting)[:2] == (0, 6)
    for junk in ("{not json", json.dumps({"version": 99}), json.dumps([1, 2]),
                 json.dumps({"version": 1, "methods": {}, "predictions": {"a.png": {"method": 3}}})):
        (out / E.PREDICTIONS_RECORD).write_text(junk)
        capsys.readouterr()
        rc, calls, js = run_evaluate(data, counting)
        err = capsys.readouterr().err
        assert rc == 0 and calls == 6, err
        warning = [line for line in err.splitlines() if "warning" in line]
        assert len(warning) == 1 and str(out / E.PREDICTIONS_RECORD) in warning[0]
        assert "predicting everything again" in warning[0]
        assert sorted(record(out)["predictions"]) == [f"{n}.png" for n in NAMES]   # whole again
    os.remove(out / E.PREDICTIONS_RECORD)
    os.mkdir(out / E.PREDICTIONS_RECORD)              # cannot be written: refused before predicting
    rc, calls, _ = run_evaluate(data, counting)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and calls == 0 and len(err) == 1 and str(out / E.PREDICTIONS_RECORD) in err[0]


def test_predict_folder_without_a_key_resumes_nothing(data):
    out = data / "out"
    key = {"kind": "test"}
    first = E.predict_folder(lambda image, t: t, data / "images", data / "trimap", out, progress=False,
                             key=key)
    assert first.predicted == sorted(NAMES) and first.reused == []
    again = E.predict_folder(lambda image, t: t, data / "images", data / "trimap", out, progress=False,
                             key=key)
    assert again.reused == sorted(NAMES) and again.predicted == [] and dict(again) == dict(first)
    # no key (a Python caller that gives none): everything predicted; the PNGs it rewrites leave
    # the record, so a later run cannot take them for the keyed method's
    plain = E.predict_folder(lambda image, t: 1 - t, data / "images", data / "trimap", out,
                             names=["a", "b"], progress=False)
    assert plain.predicted == ["a", "b"]
    assert sorted(record(out)["predictions"]) == [f"{n}.png" for n in "cdef"]
    assert E.predict_folder(lambda image, t: t, data / "images", data / "trimap", out, progress=False,
                            key=key).predicted == ["a", "b"]
    fresh = data / "fresh"
    E.predict_folder(lambda image, t: t, data / "images", data / "trimap", fresh, progress=False)
    assert not (fresh / E.PREDICTIONS_RECORD).exists()


# ----------------------------------------------------------------------------- the real net
@pytest.fixture(scope="module")
def two_weights(tmp_path_factory):
    """The slim deploy net and two weights files that differ in the affinity layer's parameters
    (which change the mattes even of an untrained net)."""
    from conftest import identity_batchnorm, require_caffe
    caffe = require_caffe()
    deploy = os.path.join(ROOT, "prototxt", "slim_deploy.prototxt")
    folder = tmp_path_factory.mktemp("weights")
    net = identity_batchnorm(caffe.Net(deploy, caffe.TEST))
    net.save(str(folder / "a.caffemodel"))
    net.params["affinity"][0].data[...] += 0.5
    net.save(str(folder / "b.caffemodel"))
    return deploy, folder / "a.caffemodel", folder / "b.caffemodel"


def test_predict_py_reuses_mattes_of_the_same_weights_only(data, two_weights, tmp_path):
    deploy, wa, wb = two_weights
    weights = tmp_path / "w.caffemodel"
    shutil.copy(wa, weights)
    out = tmp_path / "mattes"

    def predict(*extra):
        rc, stdout, stderr = predict_cli("--model", deploy, "--weights", weights, "--image", data / "images",
                                         "--trimap", data / "trimap", "--out", out, "--no-progress", *extra)
        assert rc == 0, stderr
        return stdout + stderr

    assert f"6 mattes in {out} (predicted 6)" in predict() and "(predicted 6)" in predict("--no-resume")
    first = {n: (out / f"{n}.png").read_bytes() for n in NAMES}
    said = predict()
    assert "reused 6 of 6 predictions from an earlier run" in said and "(predicted 0, reused 6" in said
    shutil.copy(wb, weights)       # the same file name, other weights (a later snapshot, say)
    said = predict()
    assert "6 prediction(s) there were made by another method or model (different weights)" in said
    assert "(predicted 6)" in said
    assert any((out / f"{n}.png").read_bytes() != first[n] for n in NAMES)
    said = predict("--force-known")
    assert "(different force known)" in said and "(predicted 6)" in said
    assert "reused 6 of 6" in predict("--force-known")


def test_main_job_rescoring_predicts_the_net_again_only_for_new_weights(data, two_weights, tmp_path, capfd):
    """dmpn.main_job.evaluate, as a rerun of the main job calls it: unchanged weights -> nothing is
    predicted again; more training (a new snapshot) -> the net's mattes, not the baselines'."""
    from dmpn import main_job
    deploy, wa, wb = two_weights
    results = tmp_path / "results"
    test = results / "data" / "test"
    for sub, dst in (("images", "image"), ("trimap", "trimap"), ("gt", "alpha")):
        shutil.copytree(data / sub, test / dst)
    netdir = results / "net"
    netdir.mkdir()
    shutil.copy(deploy, netdir / "deploy.prototxt")
    shutil.copy(wa, netdir / "bn_recomputed_iter_100.caffemodel")
    shutil.copy(wb, netdir / "bn_recomputed_iter_200.caffemodel")

    def score(weights):
        capfd.readouterr()
        stage = results / main_job.STAGE
        stage.mkdir(exist_ok=True)
        metrics = main_job.evaluate(str(stage), str(results / "data"), str(netdir), str(netdir / weights),
                                    str(results / "mattes"))
        assert metrics["weights"] == f"net/{weights}"  # as --out sees it
        # evaluate.py's own record of what it scored: the paths given and the weights' digest
        source = metrics["methods"]["model"]["source"]
        assert source["weights"] == str(netdir / weights)
        assert source["key"]["weights"] == hashlib.sha256((netdir / weights).read_bytes()).hexdigest()
        return metrics, capfd.readouterr().err

    first, err = score("bn_recomputed_iter_100.caffemodel")
    assert "reused" not in err
    again, err = score("bn_recomputed_iter_100.caffemodel")
    for method in ("model", "cf", "knn", "handcrafted"):
        assert f"{method}: reused 6 of 6 predictions from an earlier run" in err, err
    assert again["methods"] == first["methods"]
    later, err = score("bn_recomputed_iter_200.caffemodel")
    assert "model: 6 prediction(s) there were made by another method or model (different weights)" in err
    for method in ("cf", "knn", "handcrafted"):
        assert f"{method}: reused 6 of 6" in err
    assert later["methods"]["model"] != first["methods"]["model"]
    assert later["methods"]["cf"] == first["methods"]["cf"]


def test_an_interrupt_outside_the_predictions_says_interrupted(data, monkeypatch, capsys):
    """Ctrl-C while the predictor loads (or while scoring): exit 130 and the word, not the class."""
    (data / "slow_loading_predictor.py").write_text("raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(data))
    try:
        rc = E.main(["--predictor", "slow_loading_predictor:matte", "--images", str(data / "images"),
                     "--gt", str(data / "gt"), "--trimap", str(data / "trimap"), "--no-progress"])
    finally:
        sys.modules.pop("slow_loading_predictor", None)
    assert rc == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "evaluate.py: error: interrupted"


def test_a_python_layer_net_is_keyed_on_its_layers_source(tmp_path, monkeypatch):
    """A deploy net with Python layers runs their source: a change there is another method."""
    from conftest import require_caffe
    require_caffe()
    (tmp_path / "my_scale_layer.py").write_text("FACTOR = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
                      'layer { name: "s" type: "Python" bottom: "x" top: "y" '
                      'python_param { module: "my_scale_layer" layer: "Scale" } }\n')
    weights = tmp_path / "w.caffemodel"
    weights.write_bytes(b"weights")
    first = E.caffe_method_key(deploy, weights)
    assert first["python_layers"] is not None
    assert E.caffe_method_key(deploy, weights) == first
    (tmp_path / "my_scale_layer.py").write_text("FACTOR = 3\n")
    assert E.caffe_method_key(deploy, weights)["python_layers"] != first["python_layers"]
    ours = os.path.join(ROOT, "prototxt", "slim_deploy.prototxt")  # C++ layers only
    assert E.caffe_method_key(ours, weights)["python_layers"] is None


def test_a_png_replaced_by_another_writer_right_after_ours_is_not_reused(data, counting, monkeypatch, capsys):
    """Two runs writing one folder: the record holds the hash of the PNG this run wrote (taken
    before the rename), so another run's PNG under that name is never taken for ours."""
    real_write_png = E.write_png

    def write_png_then_another_writer(path, array):
        digest = real_write_png(path, array)
        if os.path.basename(path) == "c.png":
            real_write_png(path, np.full(np.shape(array), 0.5))
        return digest
    monkeypatch.setattr(E, "write_png", write_png_then_another_writer)
    assert run_evaluate(data, counting)[:2] == (0, 6)
    monkeypatch.setattr(E, "write_png", real_write_png)
    capsys.readouterr()
    assert run_evaluate(data, counting)[:2] == (0, 1)
    assert "1 PNG(s) changed since they were predicted (c)" in capsys.readouterr().err


def test_the_net_key_names_the_numerical_libraries_it_runs_on(tmp_path):
    """An upgrade of BLAS (or cuBLAS) can change a net's low bits without changing libcaffe: the
    key lists the numerical libraries this process has mapped, and a replaced file changes it."""
    from conftest import require_caffe
    require_caffe()
    ours = os.path.join(ROOT, "prototxt", "slim_deploy.prototxt")
    weights = tmp_path / "w.caffemodel"
    weights.write_bytes(b"weights")
    libraries = E.caffe_method_key(ours, weights)["numeric_libraries"]
    assert any("blas" in os.path.basename(path) for path, _, _ in libraries), libraries
    blas, other = tmp_path / "libopenblas.so.0", tmp_path / "libpng16.so.16"
    for lib in (blas, other):
        lib.write_bytes(b"\x7fELF")
    maps = tmp_path / "maps"
    maps.write_text("".join(f"7f00-7f01 r-xp 00000000 08:01 {i} {lib}\n" for i, lib in enumerate((blas, other)))
                    + "7f02-7f03 rw-p 00000000 00:00 0 [heap]\n")
    key = E._numeric_libraries_key(str(maps))
    assert [path for path, _, _ in key] == [str(blas)]
    os.utime(blas, ns=(1, 1))     # what an upgrade does: another file at that path
    assert E._numeric_libraries_key(str(maps)) != key


def test_the_gpu_key_names_the_gpu_model(monkeypatch):
    """GPU models run other cuBLAS kernels: the key says which GPU (from the driver library) and
    is None where there is no driver or no such device."""
    import ctypes

    class FakeDriver:
        def cuInit(self, flags):
            return 0

        def cuDeviceGet(self, handle, ordinal):
            if ordinal > 0:
                return 101                        # CUDA_ERROR_INVALID_DEVICE
            handle._obj.value = ordinal
            return 0

        def cuDeviceGetName(self, name, length, handle):
            name.value = b"NVIDIA H100 80GB HBM3"
            return 0

        def cuDriverGetVersion(self, version):
            version._obj.value = 13000
            return 0

    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeDriver())
    assert E._gpu_model(0) == "NVIDIA H100 80GB HBM3, driver 13000"
    assert E._gpu_model(1) is None

    def no_driver(name):
        raise OSError(f"{name}: cannot open shared object file")
    monkeypatch.setattr(ctypes, "CDLL", no_driver)
    assert E._gpu_model(0) is None
