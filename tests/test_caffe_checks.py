"""dmpn.caffe_checks: what Caffe would abort the process on (exit 134, a glog "Check failed"
dump) is refused in Python first, with one line naming the file and the reason."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, require_caffe
from dmpn import caffe_checks as C
from dmpn import net as N
from dmpn.imageio import InputError

SLIM_DEPLOY = ROOT / "prototxt" / "slim_deploy.prototxt"
FULL_DEPLOY = ROOT / "prototxt" / "deploy.prototxt"


def write_lmdb(path, items=3, channels=C.ITEM_CHANNELS, height=48, width=48, seed=0):
    """An LMDB of ``items`` random uint8 Datums C x H x W, as tools/make_lmdb.py writes them."""
    import lmdb
    from dmpn.datum import encode_datum
    rng = np.random.default_rng(seed)
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i in range(items):
            arr = rng.integers(0, 256, (channels, height, width), dtype=np.uint8)
            txn.put(f"{i:08d}".encode(), encode_datum(arr))
    env.close()
    return path


def solver_state(path, learned_net="/runs/net/snap_iter_100.caffemodel"):
    """A .solverstate as Caffe's SGD solver writes it (iteration, learned_net, history)."""
    from caffe.proto import caffe_pb2
    state = caffe_pb2.SolverState(iter=100, learned_net=learned_net, current_step=0)
    blob = state.history.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([0.5] * 6)
    path.write_bytes(state.SerializeToString())
    return path


def test_item_layout_is_the_one_make_lmdb_packs_and_the_net_slices():
    from dmpn import compose
    from dmpn.lmdb_builder import CHANNEL_ORDER, SLICE_POINTS
    assert CHANNEL_ORDER == {"image": [0, 1, 2], "trimap": [3], "alpha": [4], "fg": [5, 6, 7], "bg": [8, 9, 10]}
    assert C.ITEM_CHANNELS == 11 == len(compose.CHANNELS)
    assert tuple(N.ITEM_SLICE_POINTS) == tuple(SLICE_POINTS) == (3, 4, 5, 8)
    rng = np.random.default_rng(0)
    c, f, b = (rng.integers(0, 256, (4, 5, 3), dtype=np.uint8) for _ in range(3))
    t, a = (rng.integers(0, 256, (4, 5), dtype=np.uint8) for _ in range(2))
    parts = np.split(compose.pack_item(c, t, a, f, b), N.ITEM_SLICE_POINTS)  # as the Slice layer cuts it
    assert [p.shape[0] for p in parts] == [3, 1, 1, 3, 3]
    assert np.array_equal(parts[1][0], t) and np.array_equal(parts[2][0], a)
    assert np.array_equal(parts[4].transpose(1, 2, 0), b)


def test_prototxt_refusals_name_the_file_and_the_line(tmp_path):
    require_caffe()
    assert len(C.check_prototxt(SLIM_DEPLOY).layer) > 10
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer { name: "c" type: "Convolution"\n  bogus_field: 3 }\n')
    with pytest.raises(InputError, match=r"bad\.prototxt: not a net prototxt \(line 3: .*bogus_field"):
        C.check_prototxt(bad)
    garbage = tmp_path / "garbage.prototxt"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match=r"garbage\.prototxt: not a net prototxt: a binary file"):
        C.check_prototxt(garbage)
    with pytest.raises(InputError, match=r"slim_solver\.prototxt: a solver prototxt, not a net prototxt"):
        C.check_prototxt(ROOT / "prototxt" / "slim_solver.prototxt")
    empty = tmp_path / "empty.prototxt"
    empty.write_text('name: "nothing"\n')
    with pytest.raises(InputError, match=r"empty\.prototxt: not a net prototxt: it defines no layer"):
        C.check_prototxt(empty)
    typo = tmp_path / "typo.prototxt"
    typo.write_text('layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
                    'layer { name: "c" type: "Convolutoin" bottom: "x" top: "y" }\n')
    with pytest.raises(InputError, match=r"typo\.prototxt: layer 'c' has type 'Convolutoin'.*'Convolution'"):
        C.check_prototxt(typo)
    orphan = tmp_path / "orphan.prototxt"
    orphan.write_text('layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
                      'layer { name: "r" type: "ReLU" bottom: "z" top: "y" }\n')
    with pytest.raises(InputError, match=r"orphan\.prototxt: layer 'r' takes bottom 'z', which no earlier "
                                         r"layer of its TEST net produces"):
        C.check_prototxt(orphan)
    with pytest.raises(InputError, match=r"missing\.prototxt: no such net prototxt file"):
        C.check_prototxt(tmp_path / "missing.prototxt")
    # A bottom produced only by a TRAIN-phase layer: fine for TRAIN, not for TEST.
    train_only = tmp_path / "train_only.prototxt"
    train_only.write_text('layer { name: "d" type: "Input" top: "x" include { phase: TRAIN } '
                          'input_param { shape { dim: 1 } } }\nlayer { name: "r" type: "ReLU" bottom: "x" top: "y" }\n')
    C.check_prototxt(train_only, phase="TRAIN")
    with pytest.raises(InputError, match="takes bottom 'x'"):
        C.check_prototxt(train_only, phase="TEST")


def test_weights_refusals_name_the_layer_and_both_shapes(tmp_path):
    caffe = require_caffe()
    slim = tmp_path / "slim.caffemodel"
    caffe.Net(str(SLIM_DEPLOY), caffe.TEST).save(str(slim))
    assert C.check_weights(slim, SLIM_DEPLOY) is not None
    net = caffe.Net(str(FULL_DEPLOY), caffe.TEST)
    with pytest.raises(InputError, match=rf"slim\.caffemodel: layer 'conv1_1' parameter 0 has shape 8 x 4 x 3 x 3, "
                                         rf"the net {FULL_DEPLOY} wants 64 x 4 x 3 x 3: weights of another net"):
        C.check_weights(slim, net, net_path=FULL_DEPLOY)
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match=r"garbage\.caffemodel: not a Caffe \.caffemodel"):
        C.check_weights(garbage, net)
    state = solver_state(tmp_path / "snap_iter_100.solverstate")
    with pytest.raises(InputError, match=r"snap_iter_100\.solverstate: a Caffe solver state \(\.solverstate, "
                                         r"iteration 100\), not weights: give the \.caffemodel of that snapshot "
                                         r"\(/runs/net/snap_iter_100\.caffemodel\)"):
        C.check_weights(state, net)
    with pytest.raises(InputError, match=r"deploy\.prototxt: not a Caffe \.caffemodel \(a text prototxt\)"):
        C.check_weights(FULL_DEPLOY, net)
    other = tmp_path / "other.prototxt"
    other.write_text('layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }\n'
                     'layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 kernel_size: 1 } }\n')
    foreign = tmp_path / "foreign.caffemodel"
    caffe.Net(str(other), caffe.TEST).save(str(foreign))
    with pytest.raises(InputError, match=r"foreign\.caffemodel: none of its 2 layers \('d', 'c'\) is a layer with "
                                         r"parameters of the net: weights of another net"):
        C.check_weights(foreign, net)
    # A blob whose values do not fill its shape (a damaged or hand-made file).
    from caffe.proto import caffe_pb2
    param = caffe_pb2.NetParameter()
    param.ParseFromString(slim.read_bytes())
    layer = next(l for l in param.layer if l.name == "conv1_1")
    del layer.blobs[0].data[-1]
    damaged = tmp_path / "damaged.caffemodel"
    damaged.write_bytes(param.SerializeToString())
    with pytest.raises(InputError, match=r"damaged\.caffemodel: layer 'conv1_1' parameter 0 holds 287 values for "
                                         r"its shape 8 x 4 x 3 x 3 \(288\): a damaged file"):
        C.check_weights(damaged, SLIM_DEPLOY)


def test_hdf5_weights_are_checked_as_caffe_reads_them(tmp_path):
    """Caffe's HDF5 weights (Net::save_hdf5, a solver's snapshot_format: HDF5): accepted where
    they fit, and refused with the layer and both shapes where they do not (Caffe aborts)."""
    caffe = require_caffe()
    import h5py
    weights = tmp_path / "slim.caffemodel.h5"
    caffe.Net(str(SLIM_DEPLOY), caffe.TEST).save_hdf5(str(weights))
    assert C.check_weights(weights, SLIM_DEPLOY) is None
    caffe.Net(str(SLIM_DEPLOY), str(weights), caffe.TEST)  # and Caffe agrees
    with pytest.raises(InputError, match=rf"slim\.caffemodel\.h5: layer 'affinity' parameter 0 has shape 2 x 16, "
                                         rf"the net {FULL_DEPLOY} wants 2 x 128: weights of another net"):
        C.check_weights(weights, FULL_DEPLOY)
    gap = tmp_path / "gap.caffemodel.h5"
    gap.write_bytes(weights.read_bytes())
    with h5py.File(gap, "r+") as f:
        f["data/affinity"].move("1", "2")  # datasets 0 and 2: Caffe looks for 1
    with pytest.raises(InputError, match=r"gap\.caffemodel\.h5: data/affinity holds \['0', '2'\] where Caffe "
                                         r"reads numeric datasets 0, 1"):
        C.check_weights(gap, SLIM_DEPLOY)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(InputError, match=r"other\.h5: an HDF5 file without the group 'data' of Caffe's HDF5 weights"):
        C.check_weights(other, SLIM_DEPLOY)
    cut = tmp_path / "cut.caffemodel.h5"
    cut.write_bytes(weights.read_bytes()[:2000])
    with pytest.raises(InputError, match=r"cut\.caffemodel\.h5: not a readable HDF5 file"):
        C.check_weights(cut, SLIM_DEPLOY)


def test_hdf5_weights_caffe_accepts_are_accepted(tmp_path):
    """What CopyTrainedLayersFromHDF5 takes: a layer whose parameters are shared holds no
    datasets (Net::ToHDF5 writes them with their owner), groups of no layer of the net are
    ignored, and the file may start with a user block (H5Fis_hdf5 looks past it)."""
    caffe = require_caffe()
    import h5py
    shared = tmp_path / "shared.prototxt"
    shared.write_text(
        'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 } } }\n'
        + "".join(f'layer {{ name: "{n}" type: "InnerProduct" bottom: "x" top: "{n}" param {{ name: "w" }} '
                  f'param {{ name: "b" }} inner_product_param {{ num_output: 2 }} }}\n' for n in "ab"))
    weights = tmp_path / "shared.caffemodel.h5"
    caffe.Net(str(shared), caffe.TEST).save_hdf5(str(weights))
    with h5py.File(weights, "r+") as f:
        assert sorted(f["data/a"]) == ["0", "1"] and len(f["data/b"]) == 0  # b's are a's
        f["data/notes"] = np.bytes_("not a layer")
    caffe.Net(str(shared), str(weights), caffe.TEST)  # Caffe takes it
    assert C.check_weights(weights, shared) is None
    with h5py.File(weights, "r") as src, h5py.File(tmp_path / "block.h5", "w", userblock_size=512) as dst:
        src.copy("data", dst)
    caffe.Net(str(shared), str(tmp_path / "block.h5"), caffe.TEST)
    assert C.check_weights(tmp_path / "block.h5", shared) is None
    with h5py.File(weights, "r+") as f:
        del f["data/a/1"]  # a owns its bias: Caffe needs it
    with pytest.raises(InputError, match=r"data/a holds \['0'\] where Caffe reads numeric datasets 0, 1"):
        C.check_weights(weights, shared)


def test_weights_check_accepts_legacy_4d_blob_shapes(tmp_path):
    caffe = require_caffe()
    from caffe.proto import caffe_pb2
    slim = tmp_path / "slim.caffemodel"
    caffe.Net(str(SLIM_DEPLOY), caffe.TEST).save(str(slim))
    param = caffe_pb2.NetParameter()
    param.ParseFromString(slim.read_bytes())
    blob = next(l for l in param.layer if l.name == "conv1_1_bn").blobs[0]  # the means, shape (8,)
    blob.ClearField("shape")
    blob.num, blob.channels, blob.height, blob.width = 1, 1, 1, 8  # Caffe's old 4-D fields, from the end
    legacy = tmp_path / "legacy.caffemodel"
    legacy.write_bytes(param.SerializeToString())
    C.check_weights(legacy, SLIM_DEPLOY)
    caffe.Net(str(SLIM_DEPLOY), str(legacy), caffe.TEST)  # and Caffe agrees
    blob.height, blob.width = 8, 1
    legacy.write_bytes(param.SerializeToString())
    with pytest.raises(InputError, match=r"layer 'conv1_1_bn' parameter 0 has shape 1 x 1 x 8 x 1, the net "
                                         r".*slim_deploy\.prototxt wants 8:"):
        C.check_weights(legacy, SLIM_DEPLOY)


def test_gpu_ids_are_checked_without_aborting(monkeypatch):
    require_caffe()
    with pytest.raises(InputError, match=r"--gpu -1: GPU ids start at 0"):
        C.check_gpu(-1)
    count, reason = C.gpu_count()
    if count == 0:
        assert reason
        with pytest.raises(InputError, match=r"--gpu 0: this machine has no GPU that Caffe can use \(.+\); "
                                             r"leave out --gpu"):
            C.check_gpu(0)
    with pytest.raises(InputError, match=rf"--gpu {count + 3}: this machine has "):
        C.check_gpu(count + 3)
    monkeypatch.setattr(C, "gpu_count", lambda: (2, None))
    assert C.check_gpu("1") == 1
    with pytest.raises(InputError, match=r"--gpu 2: this machine has 2 GPUs \(ids 0 to 1\)"):
        C.check_gpu(2)
    monkeypatch.setattr(C, "gpu_count", lambda: (1, None))
    with pytest.raises(InputError, match=r"--device 5: this machine has 1 GPU \(id 0\)"):
        C.check_gpu(5, option="--device")


def test_gpu_check_of_a_missing_device_exits_cleanly():
    """The count goes through the CUDA runtime's cudaGetDeviceCount, which returns an error code
    where Caffe's set_device aborts the process."""
    require_caffe()
    res = subprocess.run([sys.executable, "-c", "from dmpn.caffe_checks import check_gpu\n"
                          "try:\n    check_gpu(97)\nexcept ValueError as e:\n    print('refused:', e)\n"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "refused: --gpu 97: this machine has" in res.stdout


def test_lmdb_refusals(tmp_path):
    pytest.importorskip("lmdb")
    good = write_lmdb(tmp_path / "good_lmdb", items=2, height=40, width=50)
    assert C.check_lmdb(good, crop=32) == (2, (C.ITEM_CHANNELS, 40, 50))
    with pytest.raises(InputError, match=r"good_lmdb: items are 40 x 50 \(item '00000000'\), smaller than the "
                                         r"net's 48 x 48 crop"):
        C.check_lmdb(good, crop=48)
    nine = write_lmdb(tmp_path / "nine_lmdb", channels=9)
    with pytest.raises(InputError, match=r"nine_lmdb: items have 9 channels \(item '00000000'\); the net reads 11"):
        C.check_lmdb(nine)
    assert C.check_lmdb(nine, channels=None)[1][0] == 9
    with pytest.raises(InputError, match=r"missing_lmdb: no such LMDB"):
        C.check_lmdb(tmp_path / "missing_lmdb")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(InputError, match=r"empty_folder: not an LMDB: the folder holds no data\.mdb"):
        C.check_lmdb(tmp_path / "empty_folder")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(InputError, match=r"a_file: not an LMDB: a file"):
        C.check_lmdb(tmp_path / "a_file")
    empty = write_lmdb(tmp_path / "empty_lmdb", items=0)
    with pytest.raises(InputError, match=r"empty_lmdb: the LMDB is empty"):
        C.check_lmdb(empty)
    (tmp_path / "junk_lmdb").mkdir()
    (tmp_path / "junk_lmdb" / "data.mdb").write_bytes(b"\0" * 20000)
    with pytest.raises(InputError, match=r"junk_lmdb: not a readable LMDB"):
        C.check_lmdb(tmp_path / "junk_lmdb")


def test_phase_rules_are_caffes():
    require_caffe()
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    def layer(rules):
        return text_format.Parse(f'name: "l" type: "ReLU" {rules}', caffe_pb2.LayerParameter())
    assert C.in_phase(layer(""), "TRAIN") and C.in_phase(layer(""), "TEST")
    assert C.in_phase(layer("include { phase: TRAIN }"), "train")
    assert not C.in_phase(layer("include { phase: TRAIN }"), caffe_pb2.TEST)
    assert not C.in_phase(layer("exclude { phase: TEST }"), "TEST")
    assert not C.in_phase(layer('include { stage: "s" }'), "TEST")
    assert C.in_phase(layer('include { stage: "s" }'), "TEST", stages={"s"})
    assert C.in_phase(layer("include { min_level: 1 }"), "TEST", level=1)


def test_solver_state_to_resume_from(tmp_path):
    caffe = require_caffe()
    model = tmp_path / "snap_iter_100.caffemodel"
    caffe.Net(str(SLIM_DEPLOY), caffe.TEST).save(str(model))
    state = solver_state(tmp_path / "snap_iter_100.solverstate", str(model))
    assert C.check_solverstate(state).iter == 100
    truncated = tmp_path / "snap_iter_200.solverstate"
    truncated.write_bytes(state.read_bytes()[:-7])
    with pytest.raises(InputError, match=r"snap_iter_200\.solverstate: not a readable Caffe solver state \(a damaged "
                                         r"snapshot\?\): delete it and its \.caffemodel"):
        C.check_solverstate(truncated)
    model.write_bytes(b"")
    with pytest.raises(InputError, match=r"snap_iter_100\.caffemodel: not a readable \.caffemodel \(the weights of "
                                         r"the snapshot .*snap_iter_100\.solverstate\)"):
        C.check_solverstate(state)
    model.unlink()
    with pytest.raises(InputError, match=r"snap_iter_100\.solverstate: the weights of this snapshot, .*"
                                         r"snap_iter_100\.caffemodel, are missing"):
        C.check_solverstate(state)


def test_a_caffe_without_cuda_runtime_has_no_gpu(monkeypatch):
    """A CPU_ONLY Caffe maps no libcudart: no GPU for it, whatever CUDA the system has."""
    monkeypatch.setattr(C, "_mapped", lambda prefix, maps="/proc/self/maps": [])
    count, reason = C.gpu_count()
    assert count == 0 and "CPU_ONLY" in reason
    with pytest.raises(InputError, match="--gpu 0: this machine has no GPU that Caffe can use"):
        C.check_gpu(0)


LEVEL_NET = """name: "lvl"
state { level: 1 }
layer { name: "in" type: "Input" top: "a" input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }
layer { name: "mk" type: "ReLU" bottom: "a" top: "x" include { min_level: 1 } }
layer { name: "use" type: "ReLU" bottom: "x" top: "y" }
"""


def test_bottoms_are_checked_at_the_level_pycaffe_builds(tmp_path):
    """pycaffe's Net(path, phase) sets level 0 whatever the prototxt's state says: a bottom made
    only at the prototxt's level 1 is missing there (the check took level 1: Caffe aborted)."""
    require_caffe()
    path = tmp_path / "lvl.prototxt"
    path.write_text(LEVEL_NET)
    with pytest.raises(InputError, match=r"lvl\.prototxt: layer 'use' takes bottom 'x', which no earlier "
                                         r"layer of its TEST net produces"):
        C.check_prototxt(path)
    res = subprocess.run([sys.executable, "-c", f"import caffe\ncaffe.Net({str(path)!r}, caffe.TEST)"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "GLOG_minloglevel": "1"})
    assert res.returncode != 0 and "Unknown bottom blob 'x'" in res.stderr  # Caffe agrees
    path.write_text(LEVEL_NET.replace("min_level: 1", "max_level: 0"))  # made at level 0: fine
    C.check_prototxt(path)


def test_gpu_of_a_flag_is_named_without_an_id(monkeypatch):
    """tools/bench_propagation.py's --gpu and --profile-once take no id: GPU 0, named alone."""
    monkeypatch.setattr(C, "gpu_count", lambda: (0, "no NVIDIA driver"))
    with pytest.raises(InputError, match=r"^--gpu: this machine has no GPU that Caffe can use \(no NVIDIA "
                                         r"driver\); leave out --gpu to run on the CPU$"):
        C.check_gpu(None)
    with pytest.raises(InputError, match=r"^--profile-once: this machine has no GPU that Caffe can use "
                                         r"\(no NVIDIA driver\)$"):
        C.check_gpu(None, option="--profile-once", cpu_fallback=False)
    monkeypatch.setattr(C, "gpu_count", lambda: (1, None))
    assert C.check_gpu(None) == 0
