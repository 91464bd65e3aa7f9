"""The foundation: the stock caffe tool with our layers registered, pycaffe, Python layers
from the plain caffe binary, and the source checks of the build."""
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import ROOT, require_caffe, tool

OUR_LAYERS = {"AffinityExp", "SparseLaplacianSolve", "Unpooling", "MattingLoss"}


def test_caffe_version():
    out = subprocess.run([tool("caffe"), "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "caffe version 1.0.0" in out.stdout + out.stderr


def test_our_layers_are_registered():
    caffe = require_caffe()
    registered = set(caffe.layer_type_list())
    assert OUR_LAYERS <= registered
    # Every layer source in cuda/ is compiled in and registered (the drop-in rule): each
    # REGISTER_LAYER_CLASS(X) there must show up in the registry.
    import re
    for src in (ROOT / "cuda/src/caffe/layers").glob("*.cpp"):
        for name in re.findall(r"REGISTER_LAYER_CLASS\((\w+)\)", src.read_text()):
            assert name in registered, f"{src.name} registers {name}, which libcaffe lacks"


PY_NET = """
name: "python_layer_net"
layer { name: "w" type: "DummyData" top: "w" top: "t"
  dummy_data_param {
    shape { dim: 1 dim: 2 dim: 6 dim: 7 } shape { dim: 1 dim: 1 dim: 6 dim: 7 }
    data_filler { type: "constant" value: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "solve" type: "Python" bottom: "w" bottom: "t" top: "alpha"
  python_param { module: "dmpn.layers.sparse_laplacian_solve"
                 layer: "SparseLaplacianSolveLayer" param_str: '{"c": 0.8}' } }
"""


def test_caffe_binary_runs_python_layer(tmp_path):
    """The plain caffe tool finds our Python layers without any variable set."""
    net = tmp_path / "net.prototxt"
    net.write_text(PY_NET)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(GLOG_minloglevel="0", GLOG_logtostderr="1")
    out = subprocess.run([tool("caffe"), "time", "-model", str(net), "-iterations", "2"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Python" in out.stderr and "Average Forward pass" in out.stderr, out.stderr[-3000:]


def test_pycaffe_runs_net_with_python_layer(tmp_path):
    caffe = require_caffe()
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(PY_NET)
    net = caffe.Net(str(net_file), caffe.TEST)
    net.forward()
    assert net.blobs["alpha"].data.shape == (1, 1, 6, 7)
    # all-foreground trimap: alpha = 1 everywhere
    assert abs(net.blobs["alpha"].data - 1).max() < 1e-6


# ---- the source checks of CMakeLists.txt ------------------------------------------------------

def bvlc_tarball():
    given = os.environ.get("CAFFE_SOURCE_TARBALL")
    if given and Path(given).exists():
        return Path(given)
    cache = Path(os.environ.get("DMPN_CACHE", Path.home() / ".cache/deepmattepropnet"))
    found = sorted(cache.glob("download/caffe_*.orig.tar.gz"))
    if not found:
        pytest.skip("no BVLC tarball in the cache (the build used a local checkout)")
    return found[0]


def configure(tmp_path, *args):
    build = tmp_path / "build"
    return subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-DDMPN_CPU_ONLY=ON",
                           "-DBUILD_python=OFF", *args],
                          capture_output=True, text=True, timeout=900)


def test_tampered_tarball_stops_the_build(tmp_path):
    src = tmp_path / "src"
    with tarfile.open(bvlc_tarball()) as tf:
        tf.extractall(src, filter="data")
    proto = src / "src/caffe/layers/relu_layer.cpp"
    proto.write_text(proto.read_text() + "\n// tampered\n")
    bad = tmp_path / "caffe_tampered.tar.gz"
    with tarfile.open(bad, "w:gz") as tf:
        for p in sorted(src.iterdir()):
            tf.add(p, arcname=p.name)
    out = configure(tmp_path, f"-DCAFFE_SOURCE_TARBALL={bad}")
    assert out.returncode != 0
    assert "Checksum mismatch" in out.stderr and str(bad) in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "build/bvlc").exists()  # nothing half-made is left as the source


def test_corrupt_tarball_is_refused(tmp_path):
    bad = tmp_path / "caffe_truncated.tar.gz"
    data = bvlc_tarball().read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    out = configure(tmp_path, f"-DCAFFE_SOURCE_TARBALL={bad}")
    assert out.returncode != 0
    assert "could not be unpacked" in out.stderr or "Checksum mismatch" in out.stderr, out.stderr[-2000:]


def test_github_style_archive_of_the_commit_is_accepted(tmp_path):
    """Another archive of the same commit (one top folder, other compression) passes the tree
    checksum and the patches apply."""
    src = tmp_path / "unpacked"
    with tarfile.open(bvlc_tarball()) as tf:
        tf.extractall(src, filter="data")
    other = tmp_path / "caffe-99bd99795dcdf0b1d3086a8d67ab1782a8a08383.tar.gz"
    with tarfile.open(other, "w:gz") as tf:
        tf.add(src, arcname="caffe-99bd99795dcdf0b1d3086a8d67ab1782a8a08383")
    out = configure(tmp_path, f"-DCAFFE_SOURCE_TARBALL={other}")
    assert "verified" in out.stdout and "patched" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert (tmp_path / "build/bvlc/.dmpn-patched").exists()


def test_setup_keeps_recently_used_installs():
    """A cached `tools/setup.sh` run prunes the build cache without deleting an install that
    another clone used recently (a job may still run on it) or this clone's own."""
    own = Path(require_caffe().__file__).resolve().parents[2]  # <install>/python/caffe/
    cache = own.parent
    # The cache is shared with other clones: the fakes are older than every real install, so
    # that the pruning they cause takes fakes only, and named by this process.
    real = list(cache.glob("install-*"))
    oldest = min(p.stat().st_mtime for p in real)
    room = len(real) < 20  # else no fake is among the 20 most recent: all must go
    tag = f"test{os.getpid()}"
    stale = [cache / f"install-{tag}-{i:02d}stale" for i in range(25)]
    recent = cache / f"install-{tag}-recent"  # another clone's, used before every real one
    try:
        for i, d in enumerate(stale):  # used 1 to 25 days before that
            d.mkdir()
            os.utime(d, (oldest - (i + 1) * 86400, oldest - (i + 1) * 86400))
        recent.mkdir()
        os.utime(recent, (oldest - 60, oldest - 60))
        out = subprocess.run(["bash", str(ROOT / "tools/setup.sh")], cwd=ROOT, capture_output=True,
                             text=True, timeout=1800)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        installs = sorted(p.name for p in cache.glob("install-*"))
        assert own.exists() and (own / ".complete").exists()
        assert sum(p.exists() for p in real) == min(len(real), 20)  # no real one for a fake
        assert recent.exists() == room  # among the 20 most recently used while there is room
        assert len(installs) <= 20, installs
        assert not stale[-1].exists()  # the least recently used went
    finally:
        for d in stale + [recent]:
            if d.exists():
                d.rmdir()


def test_build_folder_names_no_path_of_this_clone():
    """Clones on one machine share a build folder (tools/setup.sh). CMake ties a build folder
    to one source folder, so it must be configured from the cache's copy of the sources, and no
    compile flag may name this clone (numpy's headers come from the cache too): otherwise another
    clone's set-up fails, or recompiles everything."""
    require_caffe()
    record = Path(sys.executable).parent.parent / ".dmpn-caffe-build"
    if not record.exists():
        pytest.skip("no build folder recorded (Caffe was not built by tools/setup.sh)")
    build = Path(record.read_text().strip())
    if not (build / "CMakeCache.txt").exists():
        pytest.skip(f"{build} was pruned from the cache (the install outlives it)")
    cache = (build / "CMakeCache.txt").read_text()
    home = re.search(r"^CMAKE_HOME_DIRECTORY:INTERNAL=(.*)$", cache, re.M).group(1)
    assert home == str(build.parent / ("src-" + build.name[len("build-"):]))
    generated = list(build.rglob("flags.make")) + list(build.rglob("*.Release.cmake"))
    assert generated
    for f in generated:
        assert str(ROOT) not in f.read_text(), f


def test_setup_refuses_an_unknown_cpu_only_value():
    """DMPN_CPU_ONLY takes 1/ON/true/yes or 0/OFF/false/no: anything else is an error, not a
    CUDA build announced as CPU-only."""
    env = dict(os.environ, DMPN_CPU_ONLY="maybe")
    out = subprocess.run(["bash", str(ROOT / "tools/setup.sh")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env=env)
    assert out.returncode == 1 and "DMPN_CPU_ONLY=maybe: use 1 (CPU only) or 0 (CUDA)" in out.stderr
