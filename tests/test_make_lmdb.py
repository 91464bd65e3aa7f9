"""tools/make_lmdb.py: Datum encoding, LMDB layout, split by original, resume after kill -9,
argument fingerprint, disk check, bad inputs, and (when pycaffe imports) the Data layer."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dmpn import lmdb_builder as lb
from dmpn.datum import DatumError, decode_datum, decode_datum_fields, encode_datum
from dmpn.imageio import read_alpha, read_image, read_trimap, write_png
from dmpn.synth import make_original, write_originals

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "make_lmdb.py"
REAL = ROOT.parent / "shared" / "data" / "alphamatting_lowres"

TINY = ["--synthetic", "6", "--size", "40x48", "--bg-per-original", "3", "--rotations", "2",
        "--test-originals", "2", "--seed", "5"]


def _caffe():
    from conftest import require_caffe
    return require_caffe()


def _runtime_datum_class():
    """Caffe's Datum message built at run time from its definition (no pycaffe needed)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="dmpn_test_datum.proto", package="dmpntest",
                                             syntax="proto2")
    m = fdp.message_type.add(name="Datum")
    for name, num, typ, label in (("channels", 1, F.TYPE_INT32, F.LABEL_OPTIONAL),
                                  ("height", 2, F.TYPE_INT32, F.LABEL_OPTIONAL),
                                  ("width", 3, F.TYPE_INT32, F.LABEL_OPTIONAL),
                                  ("data", 4, F.TYPE_BYTES, F.LABEL_OPTIONAL),
                                  ("label", 5, F.TYPE_INT32, F.LABEL_OPTIONAL),
                                  ("float_data", 6, F.TYPE_FLOAT, F.LABEL_REPEATED),
                                  ("encoded", 7, F.TYPE_BOOL, F.LABEL_OPTIONAL)):
        m.field.add(name=name, number=num, type=typ, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("dmpntest.Datum"))


# ----------------------------------------------------------------------------------------------
# Datum


@pytest.mark.parametrize("shape,label", [((11, 5, 7), 0), ((1, 1, 1), 3), ((3, 200, 300), -2),
                                         ((11, 0, 4), 0)])
def test_datum_round_trip_and_matches_protobuf(shape, label):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    blob = encode_datum(arr, label)
    back, lab = decode_datum(blob)
    assert back.shape == shape and np.array_equal(back, arr) and lab == label
    Datum = _runtime_datum_class()
    ref = Datum(channels=shape[0], height=shape[1], width=shape[2], data=arr.tobytes(), label=label)
    assert ref.SerializeToString() == blob
    parsed = Datum()
    parsed.ParseFromString(blob)
    assert (parsed.channels, parsed.height, parsed.width, parsed.label) == (*shape, label)
    assert parsed.data == arr.tobytes() and not parsed.encoded


def test_datum_decodes_other_writers():
    Datum = _runtime_datum_class()
    d = Datum(channels=1, height=2, width=2, data=bytes([1, 2, 3, 4]), label=7,
              float_data=[0.5, 1.5], encoded=False)
    f = decode_datum_fields(d.SerializeToString())
    assert f["float_data"] == [0.5, 1.5] and f["label"] == 7
    arr, lab = decode_datum(d.SerializeToString())
    assert arr.tolist() == [[[1, 2], [3, 4]]] and lab == 7
    with pytest.raises(DatumError):
        decode_datum(encode_datum(np.zeros((2, 3, 4), np.uint8))[:-20])
    with pytest.raises(DatumError):
        encode_datum(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(DatumError):
        decode_datum(Datum(channels=1, height=1, width=1, data=b"x", encoded=True).SerializeToString())


def test_datum_matches_caffe_pb2():
    _caffe()
    from caffe.proto import caffe_pb2

    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    d = caffe_pb2.Datum(channels=2, height=3, width=4, data=arr.tobytes(), label=0)
    assert d.SerializeToString() == encode_datum(arr)
    p = caffe_pb2.Datum()
    p.ParseFromString(encode_datum(arr, 5))
    assert p.label == 5 and p.data == arr.tobytes()


# ----------------------------------------------------------------------------------------------
# helpers


def _run(argv, capsys=None):
    rc = lb.main([str(a) for a in argv])
    err = capsys.readouterr().err if capsys is not None else ""
    return rc, err


def _db(path):
    return list(lb.read_lmdb(str(path)))


def _snapshot(out):
    out = Path(out)
    snap = {"train": _db(out / "train_lmdb"), "test": _db(out / "test_lmdb")}
    snap["png"] = {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "test").rglob("*.png"))}
    return snap


def _check_items(items, manifest, seed=5):
    """Channels of every item against the inputs: composite equation, trimap values, and for
    rotation 0 the synthetic original's alpha, foreground and trimap exactly."""
    h, w = manifest["size"]["height"], manifest["size"]["width"]
    for key, arr in items:
        assert arr.shape == (11, h, w) and arr.dtype == np.uint8
        img, tri, a = arr[0:3].astype(float), arr[3], arr[4].astype(float) / 255
        fg, bg = arr[5:8].astype(float), arr[8:11].astype(float)
        assert np.abs(a * fg + (1 - a) * bg - img).max() <= 0.5 + 1e-3
        assert set(np.unique(tri)) <= {0, 128, 255}
        assert np.all(arr[4][tri == 255] >= 254) and np.all(arr[4][tri == 0] <= 1)
        _, name, b, r = key.split("_")
        assert b.startswith("b") and r.startswith("r")
        rot = int(r[1:])
        if rot == 0 and name.startswith("synth"):
            o = make_original(seed, int(name[5:9]), (h, w))
            assert np.array_equal(arr[4], np.rint(o.alpha * 255).astype(np.uint8))
            assert np.array_equal(arr[5:8], np.rint(np.moveaxis(o.fg, 2, 0) * 255).astype(np.uint8))
            assert np.array_equal(tri, o.trimap)


# ----------------------------------------------------------------------------------------------
# builds


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "out"
    rc = lb.main(["--out", str(out), *TINY, "--workers", "1"])
    assert rc == 0
    return out


def test_layout_and_manifest(tiny_build):
    out = tiny_build
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"] == {"originals": 6, "train": 24, "test": 12}
    assert m["lmdb"]["channel_order"] == {"image": [0, 1, 2], "trimap": [3], "alpha": [4],
                                          "fg": [5, 6, 7], "bg": [8, 9, 10]}
    assert m["rotations"]["angles_deg"] == [0.0, 15.0]
    assert m["seed"] == 5 and m["size"] == {"height": 40, "width": 48}
    assert m["tool_version"] == lb.BUILDER_VERSION and m["backgrounds"]["files"]
    for info in m["originals"]["per_original"].values():
        assert info["trimap"] and info["foreground"]
    train, test = _db(out / "train_lmdb"), _db(out / "test_lmdb")
    for db in (train, test):
        keys = [k for k, _ in db]
        assert keys == sorted(keys)
        assert [int(k[:8]) for k in keys] == list(range(len(keys)))
    assert test[0][0] == lb.item_key(0, m["split"]["test"][0], 0, 0)  # test: ordered
    # training items are shuffled (Caffe's Data layer reads in key order): every item is there
    # once, and the first batch-sized run of keys mixes originals
    originals = [k.split("_")[1] for k, _ in train]
    assert sorted(set(originals)) == sorted(m["split"]["train"])
    assert len({(k.split("_", 1)[1]) for k, _ in train}) == len(train)
    assert len(set(originals[:4])) > 1
    # the manifest says so, split by split
    assert "random" in m["lmdb"]["order"]["train"] and "[seed, 11]" in m["lmdb"]["order"]["train"]
    assert m["lmdb"]["order"]["test"] == "original (sorted by name), then background, then rotation"
    assert m["split"]["test_originals"] == len(m["split"]["test"]) == 2
    _check_items([(k, decode_datum(v)[0]) for k, v in train + test], m)
    # test PNGs are the test items' channels
    for key, v in test:
        arr = decode_datum(v)[0]
        assert np.array_equal(np.rint(read_image(out / "test/image" / f"{key}.png") * 255),
                              np.moveaxis(arr[0:3], 0, 2))
        assert np.array_equal(read_trimap(out / "test/trimap" / f"{key}.png"), arr[3])
        assert np.array_equal(np.rint(read_alpha(out / "test/alpha" / f"{key}.png") * 255), arr[4])
    assert not (out / ".cache").exists()


def test_split_by_original(tiny_build):
    m = json.loads((tiny_build / "manifest.json").read_text())
    train, test = set(m["split"]["train"]), set(m["split"]["test"])
    assert not train & test and len(test) == 2 and len(train | test) == 6
    orig = lambda k: k.split("_")[1]  # noqa: E731
    assert {orig(k) for k, _ in lb.read_lmdb(str(tiny_build / "train_lmdb"), True)} == train
    assert {orig(k) for k, _ in lb.read_lmdb(str(tiny_build / "test_lmdb"), True)} == test
    names = [f"o{i:02d}" for i in range(20)] + ["troll", "Doll"]
    a = lb.choose_split(names, 7, lb.FORCED_TRAIN_DEFAULT, seed=3)
    assert a == lb.choose_split(names, 7, lb.FORCED_TRAIN_DEFAULT, seed=3)
    assert a[1] != lb.choose_split(names, 7, lb.FORCED_TRAIN_DEFAULT, seed=4)[1]
    assert {"troll", "Doll"} <= set(a[0]) and set(a[2]) == {"troll", "Doll"}
    assert len(a[1]) == 7 and not set(a[0]) & set(a[1])


def test_rerun_complete_and_refuse_other_args(tiny_build, capsys):
    before = _snapshot(tiny_build)
    rc, _ = _run(["--out", tiny_build, *TINY, "--workers", "2"], capsys)
    assert rc == 0
    rc, err = _run(["--out", tiny_build, *TINY[:-1], "6"], capsys)
    assert rc == 2 and "other arguments" in err and "seed" in err
    rc, err = _run(["--out", tiny_build, *TINY[:4], "--bg-per-original", "4", *TINY[6:]], capsys)
    assert rc == 2 and "bg_per_original" in err
    assert _snapshot(tiny_build) == before


def test_foreign_output_folder_refused(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "something.txt").write_text("x")
    rc, err = _run(["--out", tmp_path / "out", *TINY], capsys)
    assert rc == 2 and "not made by make_lmdb" in err


def test_resume_after_kill_gives_identical_database(tiny_build, tmp_path):
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(TOOL), "--out", str(out), *TINY, "--workers", "2", "--txn-mb", "0.05"]
    for spec in ("train:10", "test:5"):
        p = subprocess.Popen(cmd, env=dict(env, DMPN_MAKE_LMDB_KILL_AFTER=spec),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            o, e = p.communicate(timeout=120)
        finally:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # our own process group: any leftover worker
            except ProcessLookupError:
                pass
        assert p.returncode == -signal.SIGKILL, e.decode()
        assert not (out / "manifest.json").exists()
    n_train = sum(1 for _ in lb.read_lmdb(str(out / "train_lmdb"), True))
    assert n_train == 24  # the second run finished training and was killed in test
    n_test = sum(1 for _ in lb.read_lmdb(str(out / "test_lmdb"), True))
    assert 1 < n_test < 12
    # a committed test item's PNGs deleted meanwhile, another's left empty (as a power loss could
    # before PNGs were flushed): the resumed run writes them again
    committed = sorted((out / "test" / "image").glob("*.png"))[:2]
    for sub in ("image", "alpha"):
        (out / "test" / sub / committed[0].name).unlink()
    (out / "test" / "trimap" / committed[1].name).write_bytes(b"")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "resuming after" in r.stdout
    assert _snapshot(out) == _snapshot(tiny_build)


def test_lmdb_full_then_resume(tiny_build, tmp_path, monkeypatch, capsys):
    out = tmp_path / "full"
    monkeypatch.setenv("DMPN_MAKE_LMDB_MAP_BYTES", str(300_000))  # LMDB fills up like a disk
    rc, err = _run(["--out", out, *TINY, "--workers", "1", "--txn-mb", "0.05"], capsys)
    assert rc == 4 and "rerun the same command" in err
    assert not (out / "manifest.json").exists()
    monkeypatch.delenv("DMPN_MAKE_LMDB_MAP_BYTES")
    rc, _ = _run(["--out", out, *TINY, "--workers", "1"], capsys)
    assert rc == 0
    assert _snapshot(out) == _snapshot(tiny_build)


def test_disk_check(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DMPN_MAKE_LMDB_FREE_BYTES", "100000")
    rc, err = _run(["--out", tmp_path / "o", *TINY], capsys)
    assert rc == 3 and "not enough disk space" in err
    assert "--bg-per-original" not in err  # not even one background fits: 0 is no valid value
    assert "--size" in err and "1.3 TB" in err
    assert not (tmp_path / "o").exists()
    # where fewer backgrounds fit, the suggestion is a valid count (small backgrounds: the
    # decoded ones in the cache count too, about 20 MB for scikit-image's)
    bg = tmp_path / "bg"
    for i in range(3):
        write_png(bg / f"b{i}.png", np.random.default_rng(i).random((30, 50, 3)))
    monkeypatch.setenv("DMPN_MAKE_LMDB_FREE_BYTES", str(3 * 1000 * 1000 + 64 * 1024 * 1024))
    rc, err = _run(["--out", tmp_path / "o", *TINY, "--bg-per-original", "40", "--backgrounds", bg],
                   capsys)
    m = re.search(r"--bg-per-original (\d+) would fit", err)
    assert rc == 3 and m and 1 <= int(m.group(1)) < 40, err
    assert not (tmp_path / "o").exists()


def test_unwritable_out_is_not_a_full_disk(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for out, named in ((tmp_path / "afile" / "o", tmp_path / "afile"),
                       ("/proc/dmpn-make-lmdb-test", "/proc")):
        if not os.path.isdir(os.path.dirname(str(out))):
            continue
        rc, err = _run(["--out", out, *TINY], capsys)
        assert rc == 2 and f"--out {out}: cannot be" in err and str(named) in err, err
        assert "disk space" not in err and "--bg-per-original" not in err, err


def test_other_os_errors_are_named_with_exit_1(tmp_path, monkeypatch, capsys):
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", "/somewhere/x.npz")
    monkeypatch.setattr(lb, "_prepare_original", refuse)
    rc, err = _run(["--out", tmp_path / "o", *TINY], capsys)
    assert rc == 1 and err.strip() == "make_lmdb: error: /somewhere/x.npz: Permission denied"


def test_default_test_split_keeps_a_training_original(tmp_path, capsys):
    """One original: the scaled default test count (at least one) would leave none to train on."""
    rc, err = _run(["--out", tmp_path / "o", "--preset", "demo", "--synthetic", "1"], capsys)
    assert rc == 2 and "1 original(s)" in err and "testing on 1" in err and "none for training" in err
    assert not (tmp_path / "o").exists()


def test_every_original_forced_into_training(tmp_path, capsys):
    """The manifest states the real split: nothing held out when every original must train."""
    names = [o.name for o in lb.synthetic_originals(3)]
    rc, err = _run(["--out", tmp_path / "o", "--synthetic", "3", "--size", "32x32", "--bg-per-original", "1",
                    "--rotations", "1", "--preset", "demo", "--workers", "1", "--forced-train", ",".join(names)],
                   capsys)
    assert rc == 0, err
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["split"]["test"] == [] and m["split"]["test_originals"] == 0
    assert m["counts"] == {"originals": 3, "train": 3, "test": 0}


@pytest.mark.parametrize("option", ["--max-angle", "--txn-mb"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_float_options_must_be_finite(option, value, capsys):
    with pytest.raises(SystemExit) as exc:
        lb.build_parser().parse_args(["--out", "o", option, value])
    assert exc.value.code == 2 and option in capsys.readouterr().err
    est = lb.estimate_bytes((600, 800), 150000, 93000, 81)
    assert est["total"] > 1e12


def test_help_names_paper_values():
    r = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0
    for s in ("--originals", "--trimap-dir", "--backgrounds", "--preset", "--bg-per-original",
              "--rotations", "--size", "--test-originals", "--seed", "600x800", "1000", "31",
              "243,000"):
        assert s in r.stdout, s
    # every exit status the tool uses is listed (lb.EXIT_ERROR among them)
    for code in (lb.EXIT_OK, lb.EXIT_ERROR, lb.EXIT_INPUT, lb.EXIT_DISK, lb.EXIT_WRITE, lb.EXIT_INTERRUPTED):
        assert re.search(rf"[:;] {code} ", " ".join(r.stdout.split())), code


def test_demo_preset_sizes_and_counts(tmp_path):
    rc = lb.main(["--out", str(tmp_path / "demo"), "--preset", "demo"])
    assert rc == 0
    m = json.loads((tmp_path / "demo" / "manifest.json").read_text())
    assert m["counts"] == {"originals": 12, "train": 64, "test": 32}
    assert m["size"] == {"height": 192, "width": 192}


# ----------------------------------------------------------------------------------------------
# bad input


def _originals(tmp_path, n=3, size=(32, 40)):
    folder = tmp_path / "orig"
    write_originals(folder, n, size, seed=1)
    return folder


def _first(folder, sub):
    return sorted((folder / sub).iterdir())[0]


def _bad(tmp_path, capsys, folder, expect_in_err, extra=()):
    out = tmp_path / "out"
    rc, err = _run(["--out", out, "--originals", folder, "--size", "32x32", "--bg-per-original",
                    "1", "--rotations", "1", "--test-originals", "1", *extra], capsys)
    assert rc == 2, err
    assert str(expect_in_err) in err, err
    assert not (out / "manifest.json").exists()
    assert not out.exists()  # nothing written at all


def test_bad_size_mismatch(tmp_path, capsys):
    f = _originals(tmp_path)
    p = _first(f, "alpha")
    write_png(p, np.zeros((20, 20)))
    _bad(tmp_path, capsys, f, p)


def test_bad_unreadable_and_truncated(tmp_path, capsys):
    f = _originals(tmp_path)
    p = _first(f, "image")
    p.write_bytes(b"not an image at all")
    _bad(tmp_path, capsys, f, p)
    f2 = tmp_path / "two"
    write_originals(f2, 2, (64, 64), seed=1)
    p2 = _first(f2, "alpha")
    data = p2.read_bytes()
    p2.write_bytes(data[: len(data) // 2])
    _bad(tmp_path, capsys, f2, p2)


def test_bad_trimap_values(tmp_path, capsys):
    f = _originals(tmp_path)
    p = _first(f, "trimap")
    lab = np.zeros((32, 40), np.uint8)
    lab[5:10] = 1
    lab[10:20] = 2
    write_png(p, lab)  # 0/1/2 labels: cannot be read as 0/128/255
    _bad(tmp_path, capsys, f, p)
    col = np.zeros((32, 40, 3), np.uint8)
    col[..., 0] = 255
    write_png(p, col)  # colour trimap
    _bad(tmp_path, capsys, f, p)


def test_bad_alpha_not_grey(tmp_path, capsys):
    f = _originals(tmp_path)
    p = _first(f, "alpha")
    rgb = np.zeros((32, 40, 3), np.uint8)
    rgb[..., 1] = 200
    write_png(p, rgb)
    _bad(tmp_path, capsys, f, p)


def test_alpha_as_equal_rgb_is_fine(tmp_path):
    f = _originals(tmp_path, n=2)
    p = _first(f, "alpha")
    a = read_alpha(p)
    write_png(p, np.repeat(a[..., None], 3, axis=2))
    rc = lb.main(["--out", str(tmp_path / "out"), "--originals", str(f), "--size", "32x32",
                  "--bg-per-original", "1", "--rotations", "1", "--test-originals", "1"])
    assert rc == 0


def test_bad_empty_folder_and_names(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "image").mkdir(parents=True)
    (empty / "alpha").mkdir()
    _bad(tmp_path, capsys, empty, empty / "image")
    _bad(tmp_path, capsys, tmp_path / "missing", tmp_path / "missing")
    f = _originals(tmp_path)
    p = _first(f, "alpha")
    p.rename(p.with_name("zzz_other.png"))
    _bad(tmp_path, capsys, f, "names do not match")
    f2 = tmp_path / "f2"
    write_originals(f2, 2, (32, 40), seed=1)
    t = _first(f2, "trimap")
    t.unlink()
    _bad(tmp_path, capsys, f2, "names do not match")


def test_bad_backgrounds(tmp_path, capsys):
    (tmp_path / "bg").mkdir()
    rc, err = _run(["--out", tmp_path / "o", *TINY, "--backgrounds", tmp_path / "bg"], capsys)
    assert rc == 2 and str(tmp_path / "bg") in err
    (tmp_path / "bg" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    rc, err = _run(["--out", tmp_path / "o", *TINY, "--backgrounds", tmp_path / "bg"], capsys)
    assert rc == 2 and "a.png" in err
    assert not (tmp_path / "o").exists()


def test_too_small_background_refused_before_writing(tmp_path, capsys):
    """Found mid-build it left a folder that would not resume once the file was removed."""
    bg = tmp_path / "bg"
    for i in range(3):
        write_png(bg / f"b{i}.png", np.random.default_rng(i).random((30, 50, 3)))
    write_png(bg / "tiny.png", np.zeros((1, 5, 3)))
    rc, err = _run(["--out", tmp_path / "o", *TINY, "--backgrounds", bg], capsys)
    assert rc == 2 and str(bg / "tiny.png") in err and "too small" in err
    assert not (tmp_path / "o").exists()


def test_given_backgrounds_and_derived_trimaps(tmp_path):
    bg = tmp_path / "bg"
    for i in range(3):
        write_png(bg / f"b{i}.png", np.random.default_rng(i).random((30 + i * 10, 50, 3)))
    f = _originals(tmp_path, n=3)
    shutil.rmtree(f / "trimap")
    shutil.rmtree(f / "fg")  # foreground estimated with pymatting
    out = tmp_path / "out"
    rc = lb.main(["--out", str(out), "--originals", str(f), "--backgrounds", str(bg), "--size",
                  "32x32", "--bg-per-original", "2", "--rotations", "3", "--test-originals", "1"])
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["backgrounds"]["files"] == ["b0.png", "b1.png", "b2.png"]
    info = next(iter(m["originals"]["per_original"].values()))
    assert "estimate_foreground_ml" in info["foreground"] and "made from" in info["trimap"]
    items = [(k, decode_datum(v)[0]) for k, v in _db(out / "train_lmdb")]
    assert len(items) == 2 * 2 * 3
    for _, arr in items:
        a = arr[4].astype(float) / 255
        assert np.abs(a * arr[5:8] + (1 - a) * arr[8:11] - arr[0:3]).max() <= 0.5 + 1e-3
        assert (arr[3] == 128).any()


def test_trimap_source_is_said_once_and_recorded(tmp_path, capsys):
    """The alphamatting layout (trimap1/, trimap2/, no trimap/): without --trimap-dir the trimaps
    are made from the alpha; the console says so once, naming the folders passed by and the
    option that uses one, and the manifest records the source."""
    f = _originals(tmp_path, n=3)
    (f / "trimap").rename(f / "trimap1")
    shutil.copytree(f / "trimap1", f / "trimap2")
    small = ["--size", "32x32", "--bg-per-original", "1", "--rotations", "1", "--test-originals", "1"]
    assert lb.main(["--out", str(tmp_path / "made"), "--originals", str(f), *small]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("trimaps")]
    assert len(lines) == 1, lines
    assert "made from the alpha by erosion of radius" in lines[0]
    assert f"not used: {f / 'trimap1'}/, {f / 'trimap2'}/ (--trimap-dir trimap1 uses" in lines[0]
    m = json.loads((tmp_path / "made" / "manifest.json").read_text())["trimaps"]
    assert m["source"].startswith("made from the alpha") and m["folder"] is None
    assert m["unused_folders"] == [str(f / "trimap1"), str(f / "trimap2")]

    assert lb.main(["--out", str(tmp_path / "given"), "--originals", str(f), "--trimap-dir", "trimap1",
                    *small]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("trimaps")]
    assert lines == [f"trimaps (training and test items): given, from {f / 'trimap1'}/; not used: "
                     f"{f / 'trimap2'}/ (--trimap-dir trimap2 uses {f / 'trimap2'}/)"]
    m = json.loads((tmp_path / "given" / "manifest.json").read_text())["trimaps"]
    assert m["source"] == f"given, from {f / 'trimap1'}/" and m["folder"] == str(f / "trimap1")
    assert m["unused_folders"] == [str(f / "trimap2")]
    # the folder as a shell completes it, or with ./, is the same folder (was: "trimap1//", and
    # listed as unused too)
    for spelling in ("trimap1/", "./trimap1"):
        line, used = lb.trimap_source(f, spelling, 3.0)
        assert line.startswith(f"trimaps (training and test items): given, from {f / 'trimap1'}/; ")
        assert used["folder"] == str(f / "trimap1") and used["unused_folders"] == [str(f / "trimap2")]


@pytest.mark.skipif(not (REAL / "alpha").is_dir(), reason="shared alphamatting data not present")
def test_real_alphamatting_subset(tmp_path, capsys):
    f = tmp_path / "am"
    for sub in ("image", "alpha", "trimap1"):
        (f / sub).mkdir(parents=True)
        for name in ("GT01.png", "GT02.png", "GT27.png"):
            shutil.copy(REAL / sub / name, f / sub / name)
    out = tmp_path / "out"
    rc = lb.main(["--out", str(out), "--originals", str(f), "--trimap-dir", "trimap1", "--size",
                  "48x64", "--bg-per-original", "1", "--rotations", "2", "--test-originals", "1"])
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"] == {"originals": 3, "train": 4, "test": 2}
    for info in m["originals"]["per_original"].values():
        assert "trimap1" in info["trimap"] and "pymatting" in info["foreground"]
    # GT27's trimap1 marks pixels foreground where its alpha is below 1 and background where it
    # is above 0: stored as given, one warning line
    warn = [ln for ln in capsys.readouterr().err.splitlines() if "alpha below 1" in ln]
    assert len(warn) == 1 and str(f / "trimap1" / "GT27.png") in warn[0], warn
    assert "58,885 pixels marked foreground" in warn[0] and "15,834 marked background" in warn[0]
    assert m["originals"]["per_original"]["GT27"]["trimap_contradicts_alpha"] == {
        "foreground_with_alpha_below_1": 58885, "background_with_alpha_above_0": 15834}


# ----------------------------------------------------------------------------------------------
# pycaffe Data layer (skipped where pycaffe is not built)


def test_round_trip_through_caffe_data_layer(tiny_build, tmp_path):
    caffe = _caffe()
    from caffe import layers as L
    from caffe import params as P

    m = json.loads((tiny_build / "manifest.json").read_text())
    for split in ("train", "test"):
        db = _db(tiny_build / f"{split}_lmdb")
        n = caffe.NetSpec()
        n.data = L.Data(source=str(tiny_build / f"{split}_lmdb"), backend=P.Data.LMDB,
                        batch_size=len(db), ntop=1)
        n.image, n.trimap, n.alpha, n.fg, n.bg = L.Slice(n.data, axis=1,
                                                         slice_point=lb.SLICE_POINTS, ntop=5)
        proto = tmp_path / f"{split}.prototxt"
        proto.write_text(str(n.to_proto()))
        caffe.set_mode_cpu()
        net = caffe.Net(str(proto), caffe.TEST)
        net.forward()
        data = net.blobs["data"].data
        assert data.shape == (len(db), 11, 40, 48)
        items = []
        for i, (key, v) in enumerate(db):
            arr = decode_datum(v)[0]
            assert np.array_equal(data[i], arr.astype(np.float32))
            items.append((key, data[i].astype(np.uint8)))
        _check_items(items, m)
        assert np.array_equal(net.blobs["trimap"].data[:, 0], data[:, 3])
        assert np.array_equal(net.blobs["bg"].data, data[:, 8:11])
        if split == "test":
            for i, (key, _) in enumerate(db):
                img = np.rint(read_image(tiny_build / "test/image" / f"{key}.png") * 255)
                assert np.array_equal(np.moveaxis(img, 2, 0), data[i, 0:3])




# ----------------------------------------------------------------------------------------------
# argument and input checks: one line, exit status 2, no traceback


def _tool(argv, timeout=120):
    """Run tools/make_lmdb.py; (exit status, stdout, stderr), never a traceback."""
    r = subprocess.run([sys.executable, str(TOOL), *[str(a) for a in argv]], capture_output=True,
                       text=True, timeout=timeout)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("seed", ["-1", "4294967296", "1.5", "abc"])
def test_seed_out_of_range_refused(tmp_path, seed):
    rc, _, err = _tool(["--out", tmp_path / "o", *TINY[:-2], "--seed", seed])
    assert rc == 2 and "--seed" in err and seed in err and "4294967295" in err, err
    assert not (tmp_path / "o").exists()


def test_seed_range_limits_accepted():
    for seed in ("0", "4294967295"):
        assert lb.build_parser().parse_args(["--out", "o", "--seed", seed]).seed == int(seed)


@pytest.mark.parametrize("angle", ["400", "-15", "90.5"])
def test_max_angle_out_of_range_refused(tmp_path, angle):
    rc, _, err = _tool(["--out", tmp_path / "o", *TINY, "--max-angle", angle])
    assert rc == 2 and "--max-angle" in err and angle in err and "90" in err, err
    assert not (tmp_path / "o").exists()
    for ok in ("0", "90", "22.5"):
        assert lb.build_parser().parse_args(["--out", "o", "--max-angle", ok]).max_angle == float(ok)


def test_unknown_forced_train_names_refused(tmp_path):
    names = [o.name for o in lb.synthetic_originals(6)]
    rc, _, err = _tool(["--out", tmp_path / "o", *TINY, "--forced-train",
                        f"{names[1]},nosuch,troll"])
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--forced-train" in err and "nosuch" in err and "troll" in err, err
    assert names[0] in err and names[1] in err  # the available names are listed
    assert not (tmp_path / "o").exists()
    # a file stem names its original too ("synth0001_fur" is stored as "synth0001-fur")
    assert lb.choose_split(names, 2, [names[1].replace("-", "_").upper()], 5)[2] == [names[1]]
    # the default list (the paper's 8 test images) applies where present, silently
    rc, _, err = _tool(["--out", tmp_path / "ok", *TINY, "--workers", "1"])
    assert rc == 0, err


def test_given_trimap_without_known_pixel_refused(tmp_path):
    f = _originals(tmp_path)
    p = _first(f, "trimap")
    write_png(p, np.full((32, 40), 128, np.uint8))
    rc, _, err = _tool(["--out", tmp_path / "out", "--originals", f, "--size", "32x32",
                        "--bg-per-original", "1", "--rotations", "1", "--test-originals", "1"])
    assert rc == 2 and str(p) in err and "no known pixel" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_unknown_windows_match_brute_force():
    rng = np.random.default_rng(3)
    for shape, c in (((20, 30), 5), ((12, 9), 4), ((8, 8), 8), ((6, 10), 20)):
        tri = np.where(rng.random(shape) < 0.93, 128, 0).astype(np.uint8)
        tri[2:9, 3:] = 128
        got = lb.unknown_windows(tri, c)
        ch, cw = min(c, shape[0]), min(c, shape[1])
        want = np.array([[np.all(tri[y:y + ch, x:x + cw] == 128)
                          for x in range(shape[1] - cw + 1)] for y in range(shape[0] - ch + 1)])
        assert got.shape == want.shape and np.array_equal(got, want), (shape, c)


def test_crop_check_warns_of_all_unknown_windows(tmp_path):
    """An item trimap with a crop-size window of unknown pixels only: a training crop there stops
    SparseLaplacianSolve. Training originals: any window; test originals: the centre crop."""
    f = tmp_path / "orig"
    names = write_originals(f, 3, (64, 64), seed=1)
    safe = [lb._safe_name(x) for x in names]
    p = f / "trimap" / f"{names[2]}.png"
    tri = read_trimap(p)
    tri[4:44, 10:50] = 128  # a 40 x 40 unknown block, off centre
    tri[46, 46] = 0  # a known pixel in the centre 32 x 32 crop (16..47)
    write_png(p, tri)
    args = ["--originals", f, "--size", "64x64", "--bg-per-original", "1", "--rotations", "1",
            "--test-originals", "1", "--workers", "1"]

    def warnings(out, *extra):
        rc, _, err = _tool(["--out", tmp_path / out, *args, *extra])
        assert rc == 0, err
        return [ln for ln in err.splitlines() if ln.startswith("make_lmdb: warning:")]

    warn = warnings("a", "--check-crop", "32", "--forced-train", safe[2])
    assert len(warn) == 1 and safe[2] in warn[0] and str(p) in warn[0], warn
    assert "32 x 32" in warn[0] and "no known pixel" in warn[0] and "r0 (+0 deg)" in warn[0], warn
    count = re.search(r"(up to \d+\.\d|under 0\.1) % of crop positions \((\d+)\)", warn[0])
    assert count and int(count.group(2)) >= 9 * 9, warn  # the block holds 9 x 9 window positions
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert list(m["trimap_crop_check"]["originals"]) == [safe[2]]
    assert m["trimap_crop_check"]["originals"][safe[2]]["split"] == "train"
    # windows larger than the block: nothing to report; 0 turns the check off
    for crop in ("48", "0"):
        assert warnings(f"c{crop}", "--check-crop", crop, "--forced-train", safe[2]) == []
    # the check does not change the data
    assert _db(tmp_path / "a" / "train_lmdb") == _db(tmp_path / "c48" / "train_lmdb")
    # a test original: only the centre crop counts
    held_out = ["--check-crop", "32", "--forced-train", f"{safe[0]},{safe[1]}"]
    assert warnings("t1", *held_out) == []
    tri[12:52, 12:52] = 128  # the centre crop too
    write_png(p, tri)
    warn = warnings("t2", *held_out)
    assert len(warn) == 1 and safe[2] in warn[0] and "centre crop" in warn[0], warn


@pytest.mark.parametrize("value", ["-2", "1.5", "x"])
def test_check_crop_must_be_a_whole_number(value, capsys):
    with pytest.raises(SystemExit) as exc:
        lb.build_parser().parse_args(["--out", "o", "--check-crop", value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--check-crop" in err and value in err, err
    assert lb.build_parser().parse_args(["--out", "o"]).check_crop == 160


def test_trimap_contradicting_alpha_warns(tmp_path):
    """A given trimap marking pixels foreground where the alpha is below 1, or background where
    it is above 0, is stored as given, with one warning line naming it and both counts."""
    f = _originals(tmp_path)
    p, a = _first(f, "trimap"), read_alpha(_first(f, "alpha"))
    tri = read_trimap(p)
    assert not ((tri == 255) & (a < 1)).any() and not ((tri == 0) & (a > 0)).any()
    for value, where, count in ((255, a == 0, 7), (0, a == 1, 5)):
        ys, xs = np.nonzero(where)
        tri[ys[:count], xs[:count]] = value
    write_png(p, tri)
    rc, _, err = _tool(["--out", tmp_path / "out", "--originals", f, "--size", "32x32",
                        "--bg-per-original", "1", "--rotations", "1", "--test-originals", "1",
                        "--workers", "1", "--check-crop", "0"])
    assert rc == 0, err
    warn = [ln for ln in err.splitlines() if ln.startswith("make_lmdb: warning:")]
    assert warn == [f"make_lmdb: warning: {p}: 7 pixels marked foreground (255) with alpha below 1 "
                    f"and 5 marked background (0) with alpha above 0 in {_first(f, 'alpha')}; "
                    "stored as given"], err
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    counts = {k: v.get("trimap_contradicts_alpha") for k, v in m["originals"]["per_original"].items()}
    assert sorted(counts.values(), key=str) == [
        None, None, {"foreground_with_alpha_below_1": 7, "background_with_alpha_above_0": 5}]


def _long_named_originals(tmp_path, length):
    """Three originals, the first renamed to a stem of ``length`` characters; (folder, its image
    file, its key-safe name, the other names)."""
    f = tmp_path / f"orig{length}"
    names = write_originals(f, 3, (32, 40), seed=1)
    stem = (names[0] + "-" + "x" * length)[:length]
    for sub in ("image", "alpha", "trimap", "fg"):
        (f / sub / f"{names[0]}.png").rename(f / sub / f"{stem}.png")
    return f, f / "image" / f"{stem}.png", lb._safe_name(stem), [lb._safe_name(n) for n in names[1:]]


def test_long_original_names(tmp_path, capsys):
    """Test PNGs are named <index:08d>_<name>_b<bg:04d>_r<rot>.png, 22 bytes more than the name
    here: the longest name that fits the output's NAME_MAX builds end to end (temporary files too),
    one character more is refused before anything is written (it failed after the whole training
    LMDB was written)."""
    limit = lb._name_max(tmp_path)
    longest = limit - 22
    args = ["--size", "32x32", "--bg-per-original", "1", "--rotations", "1", "--test-originals",
            "1", "--workers", "1"]
    f, image, _, others = _long_named_originals(tmp_path, longest + 1)
    out = tmp_path / "refused"
    rc, err = _run(["--out", out, "--originals", f, *args, "--forced-train", ",".join(others)], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert str(image) in err and f"limit of {limit} bytes" in err and f"at most {longest} " in err, err
    assert not out.exists()
    for length in (200, longest):  # held out for testing: its test PNGs are written
        f, _, name, others = _long_named_originals(tmp_path, length)
        out = tmp_path / f"ok{length}"
        rc, err = _run(["--out", out, "--originals", f, *args, "--forced-train", ",".join(others)],
                       capsys)
        assert rc == 0, err
        key = lb.item_key(0, name, 0, 0)
        assert json.loads((out / "manifest.json").read_text())["split"]["test"] == [name]
        for sub in ("image", "trimap", "alpha"):
            assert [p.name for p in (out / "test" / sub).iterdir()] == [key + ".png"]
        assert [k for k, _ in _db(out / "test_lmdb")] == [key]


def test_rotations_and_backgrounds_made_once(tmp_path, monkeypatch):
    """Training items come in a shuffled order: each (original, rotation) is rotated, and each
    background decoded, once per build, not again wherever a small cache would have missed."""
    from dmpn import backgrounds

    calls = {"rotate": 0, "read": 0}
    rotate, read = lb.compose.rotate_original, backgrounds.read_image

    def counted_rotate(*a):
        calls["rotate"] += 1
        return rotate(*a)

    def counted_read(path, **options):
        calls["read"] += 1
        return read(path, **options)

    monkeypatch.setattr(lb.compose, "rotate_original", counted_rotate)
    monkeypatch.setattr(backgrounds, "read_image", counted_read)
    bg = tmp_path / "bg"
    for i in range(60):  # more than a worker's in-memory cache held (48)
        write_png(bg / f"b{i:02d}.png", np.random.default_rng(i).random((12, 16, 3)))
    rc = lb.main(["--out", str(tmp_path / "o"), *TINY, "--bg-per-original", "20", "--backgrounds",
                  str(bg), "--workers", "1"])
    assert rc == 0
    assert calls["rotate"] == 6 * 2  # originals x rotations, for 240 items
    assert calls["read"] == 60 + 60  # checked before the build, decoded into the cache


def test_files_flushed_before_rename(tmp_path, monkeypatch):
    """Test PNGs (and cache files) reach the disk before their names do: after a power loss a
    PNG of a committed item is whole or missing (and then written again), never empty."""
    events = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd):
        events.append(("fsync", None))
        fsync(fd)

    def logged_replace(src, dst):
        events.append(("replace", str(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    assert lb.main(["--out", str(tmp_path / "o"), *TINY, "--workers", "1"]) == 0
    renamed = [i for i, (what, dst) in enumerate(events)
               if what == "replace" and dst.endswith((".png", ".npy", ".npz"))]
    assert sum(events[i][1].endswith(".png") for i in renamed) == 12 * 3
    assert all(events[i - 1][0] == "fsync" for i in renamed)


def test_no_progress_leaves_out_the_progress_bars(tmp_path):
    """--no-progress, as predict.py, evaluate.py and recompute_bn.py have it: no tqdm bar on
    stderr, the same console lines on stdout."""
    rc, out, err = _tool(["--out", tmp_path / "bars", *TINY, "--workers", "1"])
    assert rc == 0 and "item/s" in err, err
    rc, quiet_out, quiet_err = _tool(["--out", tmp_path / "quiet", *TINY, "--workers", "1", "--no-progress"])
    assert rc == 0 and "item/s" not in quiet_err and "%|" not in quiet_err, quiet_err
    assert "done:" in quiet_out
    rc, help_text, _ = _tool(["--help"])
    assert "--no-progress" in help_text and "no progress bars" in help_text
